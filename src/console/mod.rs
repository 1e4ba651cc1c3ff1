//! What the commands show a person: a line drawn in place on a terminal
//! (a live status, a progress bar) with log lines above it, a structured
//! log line instead when stderr is not a terminal, the demo's panel, and
//! reports as text.

pub mod live;
pub mod terminal;
pub mod text;
