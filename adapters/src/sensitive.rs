//! A string that must never reach a log, an Event, a status or an error message (tokens, keys,
//! kubeconfigs). `Debug` prints a placeholder and there is no `Display`, so a stray `{:?}` or a
//! tracing field cannot leak it; reading it takes an explicit [`Sensitive::expose`].

use std::fmt;

/// A secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only to send it where it belongs (an API request, a Secret's data).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Sensitive {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// Replace credential-looking words (long runs of token characters, JWTs, PEM bodies) in text
/// we did not write ourselves, such as an exec plugin's stderr, before it goes into an error.
pub fn redact_credential_like(text: &str) -> String {
    const LONG: usize = 24;
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() >= LONG {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '/' | '=') {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Sensitive::new("eyJhbGciOiJSUzI1NiJ9.payload.signature");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "eyJhbGciOiJSUzI1NiJ9.payload.signature");
    }

    #[test]
    fn long_credential_like_words_are_redacted_and_prose_is_kept() {
        let text = "error: vault denied token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln (code 7)";
        let redacted = redact_credential_like(text);
        assert_eq!(redacted, "error: vault denied [redacted] (code 7)");
        assert_eq!(
            redact_credential_like("exit status 2: not found"),
            "exit status 2: not found"
        );
    }
}
