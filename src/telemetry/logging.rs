//! Log set-up: JSON lines (the default when stderr is not a terminal, and for
//! files) or human-readable output, to stderr or to files under `log.dir` that
//! rotate daily or hourly (keeping `log.max_files`), filtered by `log.level` or
//! `RUST_LOG`, with every line passed through the redaction module before it
//! is written. JSON lines carry the fields of the span they were logged in:
//! `request_id` and `trace_id` for a request, `task_id` and `run_id` where known.

use std::io::{IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use tracing_appender::rolling::{RollingFileAppender, Rotation};

use crate::config::{LogConfig, LogFormat, LogRotation};

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

/// Keeps the file writer's background thread alive; dropping it flushes
/// what is buffered. Hold it until the process exits.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Installs the global subscriber: stderr, or rotating files under `log.dir`.
/// Call once, from `main`.
pub fn init(config: &LogConfig) -> Result<LogGuard, String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .map_err(|e| format!("invalid log.level {:?}: {e}", config.level))?;
    if config.dir.as_os_str().is_empty() {
        let json = match config.format {
            LogFormat::Json => true,
            LogFormat::Pretty => false,
            LogFormat::Auto => !std::io::stderr().is_terminal(),
        };
        install(filter, json, RedactingMakeWriter(std::io::stderr))?;
        return Ok(LogGuard(None));
    }
    let rotation = match config.rotation {
        LogRotation::Daily => Rotation::DAILY,
        LogRotation::Hourly => Rotation::HOURLY,
        LogRotation::Never => Rotation::NEVER,
    };
    let mut builder = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(&config.file_prefix)
        .filename_suffix("log");
    if config.max_files > 0 {
        builder = builder.max_log_files(config.max_files);
    }
    let appender = builder
        .build(&config.dir)
        .map_err(|e| format!("log.dir {}: {e}", config.dir.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    // Files are read by machines: JSON unless pretty is asked for.
    let json = config.format != LogFormat::Pretty;
    install(filter, json, RedactingMakeWriter(writer))?;
    Ok(LogGuard(Some(guard)))
}

fn install<W>(filter: EnvFilter, json: bool, writer: W) -> Result<(), String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_ansi(false).try_init()
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
