//! The unit tests of [`super`]: messages per key, reconciling with what a
//! topic holds, values, and a restore epoch's rows waiting for the state.

use super::*;
use crate::model::records::DeviceContact;

fn contact(device: &str, name: &str) -> DeviceContact {
    DeviceContact {
        device: device.into(),
        contact: name.into(),
    }
}

fn held(rows: &[(&DeviceContact, u64)]) -> BTreeMap<String, Option<String>> {
    rows.iter()
        .map(|(row, time)| {
            let mut value = Vec::new();
            write_value(row, *time, &mut value);
            (row.key(), Some(String::from_utf8(value).unwrap()))
        })
        .collect()
}

#[test]
fn a_full_read_writes_what_the_topic_lacks_and_a_tail_read_only_what_differs() {
    let (a, b, c) = (contact("a", "x"), contact("b", "y"), contact("c", "z"));
    let state: BTreeMap<String, Option<DeviceContact>> = [&a, &b]
        .into_iter()
        .map(|row| (row.key(), Some(row.clone())))
        .collect();
    // The topic holds `a` as the state has it (another time), `b` with
    // other content, and `c`, which the state lacks.
    let topic = held(&[(&a, 7), (&contact("b", "old"), 7), (&c, 7)]);
    let out = reconcile(state.clone(), topic.clone(), false);
    let expected: BTreeMap<String, Option<DeviceContact>> =
        [(b.key(), Some(b.clone())), (c.key(), None)].into();
    assert_eq!(out, expected);
    assert_eq!(reconcile(state.clone(), topic, true), expected);
    // Nothing read: a full read writes every row, a tail read none.
    assert_eq!(reconcile(state.clone(), BTreeMap::new(), false), state);
    assert!(reconcile(state, BTreeMap::new(), true).is_empty());
}

#[test]
fn each_key_gets_one_message_its_inserted_row_else_a_tombstone() {
    let (old, new) = (contact("a", "old"), contact("a", "new"));
    let (gone, added) = (contact("b", "x"), contact("c", "y"));
    let cancelled = contact("d", "z");
    // Not in key order, a key's retraction after its insertion, and a
    // row inserted and retracted at the same time.
    let updates = vec![
        (added.clone(), 1),
        (cancelled.clone(), 1),
        (new.clone(), 1),
        (gone.clone(), -1),
        (old, -1),
        (cancelled, -1),
    ];
    let mut out = messages(updates);
    out.sort_by_key(|message| match message {
        Message::Row(row) | Message::Removed(row) => row.key(),
        Message::Keyed(key, _) => key.clone(),
    });
    assert_eq!(
        out,
        vec![
            Message::Row(new),
            Message::Removed(gone),
            Message::Row(added)
        ]
    );
}

#[test]
fn a_value_is_the_row_in_field_order_then_its_time_and_reads_back_as_the_row() {
    let row = contact("d\"1", "x");
    let mut value = Vec::new();
    write_value(&row, 7, &mut value);
    let text = String::from_utf8(value).unwrap();
    assert_eq!(text, r#"{"device":"d\"1","contact":"x","time":7}"#);
    assert_eq!(serde_json::from_str::<DeviceContact>(&text).unwrap(), row);
    // A row and what a topic holds at its key meet at one worker.
    let existing = Existing {
        output: Output::DeviceContacts,
        key: row.key(),
        value: Some(text),
    };
    assert_eq!(key_hash(&row), existing.hashed());
    assert_eq!(row.key(), r#""d\"1""#);
}

/// A restore epoch's rows go to the producer only once the state is
/// restored (the outputs before the sinks have passed the epoch),
/// however long the sink has had them: writing them would take the
/// cores the restore needs. Then every one is written.
#[test]
fn a_restore_epochs_rows_wait_for_the_state_to_be_restored() {
    use differential_dataflow::AsCollection as _;
    use timely::dataflow::operators::Probe as _;
    use timely::dataflow::InputHandleVec;

    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    timely::execute_directly(move |worker| {
        let metrics = Metrics::default();
        let connection = crate::kafka::connection::Connection::new(brokers);
        let producer =
            Rc::new(crate::kafka::producer::producer(&connection, metrics.clone()).unwrap());
        let epoch: Time = 5;
        let computed = ProbeHandle::new();
        let sender = Sender::new(
            Rc::clone(&producer),
            Some(epoch),
            computed.clone(),
            metrics.clone(),
        );
        let mut rows = InputHandleVec::new();
        let mut existing = InputHandleVec::<Time, Existing>::new();
        // The rest of the dataflow before the sinks, still restoring.
        let mut rest = InputHandleVec::<Time, ()>::new();
        let (seen, written) = (ProbeHandle::new(), ProbeHandle::new());
        worker.dataflow::<Time, _, _>(|scope| {
            let collection = rows
                .to_stream(scope)
                .probe_with(&seen)
                .probe_with(&computed)
                .as_collection();
            rest.to_stream(scope).probe_with(&computed);
            upsert(
                collection,
                existing.to_stream(scope),
                TopicAtRestore::Whole,
                "contacts".into(),
                sender.clone(),
                None,
                Duration::ZERO,
            )
            .probe_with(&written);
        });
        for n in 0..100 {
            rows.send((contact(&format!("d{n}"), "x"), epoch, 1));
        }
        rows.advance_to(epoch + 1);
        existing.advance_to(epoch + 1);
        rest.advance_to(epoch);
        let produced = || {
            producer.context().publish();
            metrics.read(|f| f.produced.values().sum::<u64>())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while seen.less_equal(&epoch) {
            assert!(std::time::Instant::now() < deadline, "the rows never came");
            worker.step();
        }
        // The sink has all of the epoch's rows; the state is not restored.
        for _ in 0..100 {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        assert_eq!(
            produced(),
            0,
            "rows were written before the state was restored"
        );
        assert!(written.less_equal(&epoch));
        rest.advance_to(epoch + 1);
        while written.less_equal(&epoch) {
            assert!(
                std::time::Instant::now() < deadline,
                "the rows were never written"
            );
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        assert_eq!(produced(), 100);
    });
}
