//! The error type of the generator.

use std::{fmt, io, path::PathBuf};

/// Why generating code failed.
///
/// The [`Display`](fmt::Display) text of a parse error starts with the location in the
/// proto source, `file:line:column: message`, for example
/// `greeter.proto:7:15: expected ';', but found '}'`. [`Debug`](fmt::Debug) prints the same
/// text, so `compile_protos(..).unwrap()` and `?` in `main` both show the location.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A proto file could not be found, read, parsed or checked.
    #[error("{message}")]
    Parse {
        /// The proto file the error is in, as named in the include path, if known.
        file: Option<String>,
        /// The message, starting with `file:line:column:` when the location is known.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Generating Rust code from valid descriptors failed.
    #[error("code generation failed: {message}")]
    Generate {
        /// What went wrong.
        message: String,
    },
    /// No output directory was configured and the `OUT_DIR` environment variable is unset
    /// (it is set by cargo for build scripts).
    #[error("OUT_DIR is not set: run from a build script or call `out_dir`")]
    MissingOutDir,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// Converts a protox error, keeping its `file:line:column:` prefix.
    pub(crate) fn from_protox(err: &protox::Error) -> Self {
        let file = err.file().map(str::to_owned);
        // protox's `Debug` renders `file:line:column: message` from the error's span.
        let mut message = format!("{err:?}");
        if let Some(name) = &file {
            if !message.starts_with(name.as_str()) {
                message = format!("{name}: {message}");
            } else if let Some(rest) = message.strip_prefix(&format!("{name}:")) {
                // An error without a span renders as `file:message`; add the missing space.
                if !rest.starts_with(|c: char| c.is_ascii_digit() || c == ' ') {
                    message = format!("{name}: {rest}");
                }
            }
        }
        Error::Parse { file, message }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
