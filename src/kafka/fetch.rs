//! Reading the input partitions: librdkafka's consumer queue, polled through
//! its event API.
//!
//! rdkafka's `BaseConsumer::poll` reports a record batch the client cannot
//! read (a failed CRC check, an undecodable batch) as a bare error code,
//! without the topic, partition and offset that docs/contract.md, sections 3 and 4 requires of a
//! `corrupt` rejection. librdkafka has them: the error event carries the
//! partition and the batch's first offset. So the service polls the same
//! queue `BaseConsumer::poll` would, and reads messages and errors itself.
//! Nothing else polls that queue: the consumer's partitions are assigned
//! explicitly, so there are no rebalance or commit events to serve.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::consumer::ConsumerEvents;

/// A consumer and its queue of fetched messages and errors. It owns the
/// consumer so that the queue reference is released before the client is.
pub struct Fetcher {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    consumer: BaseConsumer<ConsumerEvents>,
}

/// One event from the queue; what it holds is read with [`Event::read`].
pub struct Event<'c> {
    event: NonNull<rdsys::rd_kafka_event_t>,
    _queue: PhantomData<&'c ()>,
}

/// What an event holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched<'e> {
    /// A record.
    Message {
        /// Its topic.
        topic: &'e str,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Its value (empty for a null value).
        payload: &'e [u8],
    },
    /// A record batch the client could not read: it failed its CRC check or
    /// could not be decoded. librdkafka reports it once per fetch, at the
    /// batch's first offset, and skips it.
    Unreadable {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The batch's first offset.
        offset: i64,
        /// The client's explanation.
        detail: String,
    },
    /// The client fetched a partition at an offset it does not hold, and
    /// stopped fetching it (`auto.offset.reset=error`: see
    /// [`crate::kafka::consumer()`]). Either records were deleted before
    /// they were read, or the client lost its place: librdkafka 2.12 misreads
    /// the bytes after a batch that fails its CRC check (it skips to the
    /// batch's length as if it were a position) and can take an offset
    /// parsed from them as its next one.
    OutOfRange {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The offset the client fetched.
        offset: i64,
        /// The client's explanation.
        detail: String,
    },
    /// Any other error the client reports (it retries by itself).
    Error {
        /// The client's explanation.
        detail: String,
        /// Whether the client cannot go on.
        fatal: bool,
    },
    /// Nothing for the service (statistics, logs).
    Nothing,
}

impl Fetcher {
    /// Reads the queue of `consumer`, which must be a group consumer (it
    /// is: see [`crate::kafka::consumer()`]).
    pub fn new(consumer: BaseConsumer<ConsumerEvents>) -> Self {
        // SAFETY: the handle is valid while `consumer` lives, and it lives in
        // self; the returned queue reference is released in Drop, before it.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        Fetcher {
            queue: NonNull::new(queue).expect("a consumer with a group.id has a consumer queue"),
            consumer,
        }
    }

    /// The consumer (to seek, or to look up offsets).
    pub fn consumer(&self) -> &BaseConsumer<ConsumerEvents> {
        &self.consumer
    }

    /// The next event, waiting at most `timeout` for one.
    pub fn poll(&self, timeout: Duration) -> Option<Event<'_>> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is valid until Drop; an event returned is owned
        // by the caller and destroyed in Event's Drop.
        let event = unsafe { rdsys::rd_kafka_queue_poll(self.queue.as_ptr(), ms) };
        NonNull::new(event).map(|event| Event {
            event,
            _queue: PhantomData,
        })
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        // SAFETY: the reference was taken in `new` and is released once,
        // before the consumer (a field) is dropped.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Whether a consumer error code means the records themselves are unreadable.
fn unreadable(code: rdsys::rd_kafka_resp_err_t) -> bool {
    use rdsys::rd_kafka_resp_err_t as E;
    matches!(
        code,
        E::RD_KAFKA_RESP_ERR__BAD_MSG
            | E::RD_KAFKA_RESP_ERR__BAD_COMPRESSION
            | E::RD_KAFKA_RESP_ERR_INVALID_MSG
            | E::RD_KAFKA_RESP_ERR_INVALID_RECORD
    )
}

/// A C string from librdkafka, lossily as text.
///
/// # Safety
/// `text` is null or a valid NUL-terminated string.
unsafe fn text(text: *const std::os::raw::c_char) -> String {
    if text.is_null() {
        String::new()
    } else {
        // SAFETY: per the function's contract.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Event<'_> {
    /// What the event holds.
    pub fn read(&mut self) -> Fetched<'_> {
        let event = self.event.as_ptr();
        // SAFETY: `event` is a live event owned by self; the pointers it
        // yields (message, topic name, payload) live as long as the event,
        // which the returned borrow of self ensures.
        unsafe {
            match rdsys::rd_kafka_event_type(event) {
                rdsys::RD_KAFKA_EVENT_FETCH => {
                    let Some(message) = rdsys::rd_kafka_event_message_next(event).as_ref() else {
                        return Fetched::Nothing;
                    };
                    if message.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        // librdkafka delivers consumer errors as error events;
                        // a fetch event never carries one, but be total.
                        return Fetched::Error {
                            detail: text(rdsys::rd_kafka_err2str(message.err)),
                            fatal: false,
                        };
                    }
                    let topic = CStr::from_ptr(rdsys::rd_kafka_topic_name(message.rkt));
                    let payload = if message.payload.is_null() {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(message.payload as *const u8, message.len)
                    };
                    Fetched::Message {
                        // Topic names are ASCII; a name that is not UTF-8 is no input topic.
                        topic: topic.to_str().unwrap_or(""),
                        partition: message.partition,
                        offset: message.offset,
                        payload,
                    }
                }
                rdsys::RD_KAFKA_EVENT_ERROR => {
                    let code = rdsys::rd_kafka_event_error(event);
                    let detail = text(rdsys::rd_kafka_event_error_string(event));
                    let place = rdsys::rd_kafka_event_topic_partition(event);
                    // auto.offset.reset=error (see `kafka::consumer`).
                    let out_of_range =
                        code == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET;
                    if let Some(place) = place.as_ref() {
                        let (topic, partition, offset) =
                            (text(place.topic), place.partition, place.offset);
                        rdsys::rd_kafka_topic_partition_destroy(place as *const _ as *mut _);
                        if unreadable(code) {
                            return Fetched::Unreadable {
                                topic,
                                partition,
                                offset,
                                detail,
                            };
                        }
                        if out_of_range {
                            return Fetched::OutOfRange {
                                topic,
                                partition,
                                offset,
                                detail,
                            };
                        }
                    }
                    Fetched::Error {
                        detail: if out_of_range {
                            format!("{detail}: the offset to read is outside the partition (retention deleted records presence had not read, or the topic was recreated); see docs/operations.md")
                        } else {
                            detail
                        },
                        fatal: out_of_range || rdsys::rd_kafka_event_error_is_fatal(event) != 0,
                    }
                }
                _ => Fetched::Nothing,
            }
        }
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        // SAFETY: the event is owned by self and destroyed once.
        unsafe { rdsys::rd_kafka_event_destroy(self.event.as_ptr()) }
    }
}
