//! The HTTP endpoints of `run --http-addr`: `/metrics`, `/health`, `/ready`
//! and the queries over the state (docs/contract.md, "Queries").
//!
//! A query is parsed here and asked through the process's [`Inbox`] (a
//! worker gives it to the dataflow, which routes it to the workers that
//! hold its keys, in this process or another); its request waits for the
//! answer as a task of hyper's on a small tokio runtime ([`THREADS`]
//! threads), so any number of connections and queries in flight cost no
//! thread each, and none holds up `/metrics` or `/ready`. The runtime's
//! threads run below the workers' priority ([`yield_to_workers`]).
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/present?business=B` | `{"business", "devices": [present rows], "as_of"}` |
//! | `GET /v1/walkin-counts?business=B&contact=C` | `{"business", "contact", "count", "as_of"}` |
//! | `GET /v1/walkin-counts?business=B` | `{"business", "counts": [{"contact", "count"}], "as_of"}` |
//! | `GET /v1/device-contacts?device=D` | `{"device", "contact", "as_of"}` |
//!
//! A missing, empty, repeated or unknown parameter is `400` with one line;
//! a query before the first frontier (or while the service stops) is
//! `503`; an unknown path `404`; a method other than `GET` `405`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::dataflow::query::{Answer, AsOf, Inbox, Part, Query};
use crate::model::records::Present;
use crate::observe::metrics::Metrics;

/// Threads of the server's runtime.
pub const THREADS: usize = 2;

/// The nice value of the server's threads: above the workers' (0), so that
/// on a busy machine a query's wake-up waits for a core rather than
/// preempting a worker in the middle of a batch.
pub const NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`NICE`] (on Linux
/// the nice value is a thread's own). The HTTP threads call it when they
/// start; best effort: where it fails, they run at the workers' priority.
pub fn yield_to_workers() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, NICE);
    }
}

/// What `/` and unknown paths list.
const ENDPOINTS: &str = "presence serves /metrics, /health, /ready, /v1/present?business=B, \
                         /v1/walkin-counts?business=B[&contact=C] and /v1/device-contacts?device=D";

/// Serves the endpoints on `addr` from a runtime of its own on background
/// threads; returns the address bound (so that port 0 picks a free one).
pub fn serve(addr: SocketAddr, metrics: Metrics, queries: Inbox) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .thread_name("http")
        .on_thread_start(yield_to_workers)
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || {
            yield_to_workers();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("a bound non-blocking listener registers with the runtime");
                loop {
                    // A failed accept (out of descriptors, say) is the
                    // client's loss; the server goes on.
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (metrics, queries) = (metrics.clone(), queries.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let (metrics, queries) = (metrics.clone(), queries.clone());
                            async move { Ok::<_, Infallible>(take(request, &metrics, &queries).await) }
                        });
                        // A connection that breaks ends here.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        })?;
    Ok(bound)
}

/// An answer: status, content type, body.
struct Reply {
    status: u16,
    json: bool,
    body: String,
}

impl Reply {
    fn text(status: u16, line: impl Into<String>) -> Reply {
        let mut body = line.into();
        body.push('\n');
        Reply {
            status,
            json: false,
            body,
        }
    }

    fn response(self) -> Response<Full<Bytes>> {
        let content_type = if self.json {
            "application/json"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        };
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status).expect("the statuses used here are valid");
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Answers one request; a query waits (without a thread) for the dataflow.
async fn take(
    request: Request<Incoming>,
    metrics: &Metrics,
    queries: &Inbox,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let query_string = request.uri().query().unwrap_or("");
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Reply::text(405, format!("{path} answers GET only")).response();
    }
    let reply = match path {
        "/metrics" => Reply {
            status: 200,
            json: false,
            body: metrics.render(),
        },
        "/health" => Reply::text(200, "ok"),
        "/ready" => match metrics.read(|f| f.readiness()) {
            Ok(()) => Reply::text(200, "ready"),
            Err(reason) => Reply::text(503, format!("not ready: {reason}")),
        },
        "/v1/present" | "/v1/walkin-counts" | "/v1/device-contacts" => {
            match parse_query(path, query_string) {
                Ok(query) => ask(queries, query).await,
                Err(line) => Reply::text(400, line),
            }
        }
        _ => Reply::text(404, ENDPOINTS),
    };
    reply.response()
}

/// Asks the dataflow and waits for its answer.
async fn ask(queries: &Inbox, query: Query) -> Reply {
    let (answered, answer) = tokio::sync::oneshot::channel();
    let asked = queries.ask(
        query,
        Box::new(move |answer| {
            // The client may have hung up: nothing to do then.
            let _ = answered.send(answer);
        }),
    );
    match (asked, answer.await) {
        (Ok(()), Ok(answer)) => Reply {
            status: 200,
            json: true,
            body: answer_json(&answer),
        },
        // Refused (before the first frontier), or dropped unanswered by
        // workers that stopped.
        _ => Reply::text(
            503,
            "not answering: the first frontier is not complete yet, or the service is stopping",
        ),
    }
}

/// The query a request asks, or the one line saying what is wrong with it.
pub fn parse_query(path: &str, query_string: &str) -> Result<Query, String> {
    let (allowed, required): (&[&str], &[&str]) = match path {
        "/v1/present" => (&["business"], &["business"]),
        "/v1/walkin-counts" => (&["business", "contact"], &["business"]),
        "/v1/device-contacts" => (&["device"], &["device"]),
        other => return Err(format!("unknown path {other}")),
    };
    let takes = || {
        allowed
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let mut values: Vec<(&str, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
        let Some(&known) = allowed.iter().find(|known| **known == name) else {
            return Err(format!(
                "unknown parameter `{name}`: {path} takes {}",
                takes()
            ));
        };
        if values.iter().any(|(seen, _)| *seen == known) {
            return Err(format!("parameter `{known}` is given twice"));
        }
        if value.is_empty() {
            return Err(format!("parameter `{known}` is empty"));
        }
        values.push((known, value.into_owned()));
    }
    let mut value = |name: &str| {
        values
            .iter()
            .position(|(seen, _)| *seen == name)
            .map(|at| values.swap_remove(at).1)
    };
    let mut found = Vec::new();
    for name in allowed {
        found.push(value(name));
    }
    if let Some(missing) = required
        .iter()
        .zip(&found)
        .find_map(|(name, found)| found.is_none().then_some(name))
    {
        return Err(format!(
            "missing parameter `{missing}`: {path} takes {}",
            takes()
        ));
    }
    let mut found = found.into_iter();
    let mut next = || found.next().flatten();
    Ok(match path {
        "/v1/present" => Query::Present {
            business: next().expect("required"),
        },
        "/v1/walkin-counts" => {
            let business = next().expect("required");
            match next() {
                Some(contact) => Query::Count { business, contact },
                None => Query::Counts { business },
            }
        }
        _ => Query::Contact {
            device: next().expect("required"),
        },
    })
}

/// The JSON of an answer, fields in the documented order.
pub fn answer_json(answer: &Answer) -> String {
    #[derive(Serialize)]
    struct PresentAnswer<'a> {
        business: &'a str,
        devices: &'a [Present],
        as_of: AsOf,
    }
    #[derive(Serialize)]
    struct CountAnswer<'a> {
        business: &'a str,
        contact: &'a str,
        count: u64,
        as_of: AsOf,
    }
    #[derive(Serialize)]
    struct ContactCount<'a> {
        contact: &'a str,
        count: u64,
    }
    #[derive(Serialize)]
    struct CountsAnswer<'a> {
        business: &'a str,
        counts: Vec<ContactCount<'a>>,
        as_of: AsOf,
    }
    #[derive(Serialize)]
    struct ContactAnswer<'a> {
        device: &'a str,
        contact: Option<&'a str>,
        as_of: AsOf,
    }
    let as_of = answer.as_of;
    let json = match (&answer.query, &answer.part) {
        (Query::Present { business }, Part::Present(devices)) => {
            serde_json::to_string(&PresentAnswer {
                business,
                devices,
                as_of,
            })
        }
        (Query::Count { business, contact }, Part::Count(count)) => {
            serde_json::to_string(&CountAnswer {
                business,
                contact,
                count: *count,
                as_of,
            })
        }
        (Query::Counts { business }, Part::Counts(counts)) => {
            serde_json::to_string(&CountsAnswer {
                business,
                counts: counts
                    .iter()
                    .map(|(contact, count)| ContactCount {
                        contact,
                        count: *count,
                    })
                    .collect(),
                as_of,
            })
        }
        (Query::Contact { device }, Part::Contact(contact)) => {
            serde_json::to_string(&ContactAnswer {
                device,
                contact: contact.as_deref(),
                as_of,
            })
        }
        (query, part) => panic!("an answer of the query's kind, not {part:?} to {query:?}"),
    };
    json.expect("answers serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's threads run at [`NICE`], below the workers: the
    /// accept thread and the runtime thread that answered a request.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_server_threads_yield_to_the_workers() {
        use std::io::{Read, Write};
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Metrics::default(),
            Inbox::default(),
        )
        .unwrap();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut niced = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = task.unwrap().path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !matches!(name.trim(), "http" | "http-accept") {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).unwrap();
            // After "pid (comm) ", field 19 of stat (nice) is the 17th.
            let rest = &stat[stat.rfind(") ").unwrap() + 2..];
            let nice: i32 = rest.split(' ').nth(16).unwrap().parse().unwrap();
            niced.push((name.trim().to_owned(), nice));
        }
        // The accept thread, and the runtime's thread that served the
        // request (the runtime's other thread may not have started yet).
        assert!(
            niced.contains(&("http-accept".to_owned(), NICE)),
            "{niced:?}"
        );
        assert!(niced.contains(&("http".to_owned(), NICE)), "{niced:?}");
    }

    #[test]
    fn queries_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(
            parse_query("/v1/walkin-counts", "business=shop%201&contact=a%40b.com"),
            Ok(Query::Count {
                business: "shop 1".into(),
                contact: "a@b.com".into()
            })
        );
        assert_eq!(
            parse_query("/v1/walkin-counts", "business=shop"),
            Ok(Query::Counts {
                business: "shop".into()
            })
        );
        assert_eq!(
            parse_query("/v1/present", ""),
            Err("missing parameter `business`: /v1/present takes `business`".into())
        );
        assert_eq!(
            parse_query("/v1/device-contacts", "device=x&shop=y"),
            Err("unknown parameter `shop`: /v1/device-contacts takes `device`".into())
        );
        assert_eq!(
            parse_query("/v1/device-contacts", "device=x&device=y"),
            Err("parameter `device` is given twice".into())
        );
        assert_eq!(
            parse_query("/v1/present", "business="),
            Err("parameter `business` is empty".into())
        );
    }

    #[test]
    fn answers_have_the_documented_fields_in_order() {
        let as_of = AsOf {
            frontier: 7,
            event_time: 5,
        };
        let json = answer_json(&Answer {
            query: Query::Contact {
                device: "phone".into(),
            },
            part: Part::Contact(None),
            as_of,
        });
        assert_eq!(
            json,
            r#"{"device":"phone","contact":null,"as_of":{"frontier":7,"event_time":5}}"#
        );
        let json = answer_json(&Answer {
            query: Query::Counts {
                business: "shop".into(),
            },
            part: Part::Counts(vec![("ann".into(), 3)]),
            as_of,
        });
        assert_eq!(
            json,
            r#"{"business":"shop","counts":[{"contact":"ann","count":3}],"as_of":{"frontier":7,"event_time":5}}"#
        );
    }
}
