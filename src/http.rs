//! The HTTP endpoints of `run --http-addr`: `/metrics`, `/health`, `/ready`
//! and the queries over the state (docs/contract.md, "Queries").
//!
//! A query is parsed here and asked through the process's [`Inbox`] (a
//! worker gives it to the dataflow, which routes it to the workers that
//! hold its keys, in this process or another); the request waits beside it,
//! and one thread writes each answer as the dataflow gives it. The
//! [`HANDLERS`] threads that take requests never wait for the dataflow:
//! any number of queries can be in flight, and none holds up `/metrics` or
//! `/ready`.
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

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};

use serde::Serialize;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::dataflow::query::{Answer, AsOf, Inbox, Part, Query};
use crate::model::records::Present;
use crate::observe::metrics::Metrics;

/// Threads serving requests.
pub const HANDLERS: usize = 4;

/// What `/` and unknown paths list.
const ENDPOINTS: &str = "presence serves /metrics, /health, /ready, /v1/present?business=B, \
                         /v1/walkin-counts?business=B[&contact=C] and /v1/device-contacts?device=D";

/// Serves the endpoints on `addr` from background threads; returns the
/// address bound (so that port 0 picks a free one).
pub fn serve(addr: SocketAddr, metrics: Metrics, queries: Inbox) -> io::Result<SocketAddr> {
    let server = Server::http(addr).map_err(io::Error::other)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("the server is not on an IP address"))?;
    let server = Arc::new(server);
    let (answered, answers) = mpsc::channel::<(Request, Outcome)>();
    std::thread::Builder::new()
        .name("http-answers".into())
        .spawn(move || {
            for (request, outcome) in answers {
                respond(request, answer_reply(outcome));
            }
        })?;
    for handler in 0..HANDLERS {
        let (server, metrics, queries, answered) = (
            Arc::clone(&server),
            metrics.clone(),
            queries.clone(),
            answered.clone(),
        );
        std::thread::Builder::new()
            .name(format!("http-{handler}"))
            .spawn(move || {
                for request in server.incoming_requests() {
                    take(request, &metrics, &queries, &answered);
                }
            })?;
    }
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
}

fn respond(request: Request, reply: Reply) {
    let content_type = if reply.json {
        "application/json"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let header = Header::from_bytes("Content-Type", content_type).expect("a valid header");
    let response = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(header);
    // A client that hung up has nothing to hear.
    let _ = request.respond(response);
}

/// How a query ended.
enum Outcome {
    /// The dataflow answered it.
    Answered(Answer),
    /// It was refused (before the first frontier) or the workers stopped
    /// before answering.
    NotAnswered,
}

/// A query's request while the dataflow answers it: handed, with the
/// answer, to the thread that writes answers — or, dropped unanswered, with
/// [`Outcome::NotAnswered`]. The handler threads never wait for the
/// dataflow, so a few of them take any number of queries in flight.
struct Pending {
    request: Option<Request>,
    answered: mpsc::Sender<(Request, Outcome)>,
}

impl Pending {
    fn answer(mut self, answer: Answer) {
        if let Some(request) = self.request.take() {
            let _ = self.answered.send((request, Outcome::Answered(answer)));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            let _ = self.answered.send((request, Outcome::NotAnswered));
        }
    }
}

/// Answers `request` now, or hands a query to the dataflow.
fn take(
    request: Request,
    metrics: &Metrics,
    queries: &Inbox,
    answered: &mpsc::Sender<(Request, Outcome)>,
) {
    let url = request.url().to_owned();
    let (path, query_string) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    if method != Method::Get && method != Method::Head {
        return respond(
            request,
            Reply::text(405, format!("{path} answers GET only")),
        );
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
                Ok(query) => {
                    let pending = Pending {
                        request: Some(request),
                        answered: answered.clone(),
                    };
                    // Refused: `pending` is dropped, and says so.
                    let _ = queries.ask(query, Box::new(move |answer| pending.answer(answer)));
                    return;
                }
                Err(line) => Reply::text(400, line),
            }
        }
        _ => Reply::text(404, ENDPOINTS),
    };
    respond(request, reply)
}

/// The reply to a query that ended as `outcome`.
fn answer_reply(outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Answered(answer) => Reply {
            status: 200,
            json: true,
            body: answer_json(&answer),
        },
        Outcome::NotAnswered => Reply::text(
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
