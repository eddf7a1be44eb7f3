//! Log set-up: JSON lines (the default when stderr is not a terminal) or
//! human-readable output, filtered by `log.level` or `RUST_LOG`, with every
//! line passed through the redaction module before it is written.

use std::io::{IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// A writer that redacts secrets from what it is given. The fmt layer writes
/// each event with one `write` of the whole formatted line, so patterns are
/// never split across calls.
pub struct Redacting<W>(pub W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(crate::redact::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Makes redacting writers around another `MakeWriter`.
#[derive(Clone)]
pub struct RedactingMakeWriter<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = Redacting<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting(self.0.make_writer())
    }
}

/// Installs the global subscriber writing to stderr. Call once, from `main`.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .map_err(|e| format!("invalid log.level {:?}: {e}", config.level))?;
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingMakeWriter(std::io::stderr));
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| format!("installing the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_redacted_on_the_way_out() {
        let mut out = Vec::new();
        Redacting(&mut out)
            .write_all(b"{\"message\":\"calling with Authorization: Bearer abc123secret\"}\n")
            .unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(!line.contains("abc123secret"), "{line}");
        assert!(line.contains("[REDACTED]"));
    }
}
