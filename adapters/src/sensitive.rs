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

/// Replace credential-looking words in text we did not write ourselves, such as an exec plugin's
/// stderr, before it goes into an error: long runs of token characters (JWTs, PEM bodies), short
/// random-looking words (mixed case and digits, or long hex), and the value after a credential
/// keyword (`token=abc`, `password: hunter2`, `Authorization: Bearer abc`), however short.
pub fn redact_credential_like(text: &str) -> String {
    const LONG: usize = 24;
    const REDACTED: &str = "[redacted]";
    fn keyword(word: &str) -> Option<bool> {
        // Some(true): whatever follows is the secret; Some(false): only a token-like value is.
        let lower = word.trim_end_matches([':', '=']).to_ascii_lowercase();
        if [
            "password",
            "passwd",
            "pwd",
            "bearer",
            "basic",
            "authorization",
        ]
        .iter()
        .any(|k| lower.ends_with(k))
        {
            return Some(true);
        }
        [
            "token",
            "secret",
            "apikey",
            "api-key",
            "api_key",
            "key",
            "credential",
            "credentials",
        ]
        .iter()
        .any(|k| lower.ends_with(k))
        .then_some(false)
    }
    fn token_like(word: &str) -> bool {
        word.chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            || word.contains(['+', '/', '=', '_'])
    }
    fn random_looking(word: &str) -> bool {
        let has = |f: fn(&char) -> bool| word.chars().any(|c| f(&c));
        let mixed = has(char::is_ascii_lowercase)
            && has(char::is_ascii_uppercase)
            && has(char::is_ascii_digit);
        let hex = word.chars().all(|c| c.is_ascii_hexdigit())
            && has(char::is_ascii_digit)
            && has(char::is_ascii_alphabetic);
        word.len() >= 16 && (mixed || hex)
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    // After a keyword: Some(always) until the next word (its value) is seen.
    let mut value_follows: Option<bool> = None;
    let flush = |word: &mut String, out: &mut String, value_follows: &mut Option<bool>| {
        if word.is_empty() {
            return;
        }
        if word.len() >= LONG || random_looking(word) {
            out.push_str(REDACTED);
            *value_follows = None;
        } else if word.chars().all(|c| c == '=') {
            // `token = abc`: the `=` keeps the keyword's value pending.
            out.push_str(word);
        } else if let Some((key, value)) = word.split_once('=')
            && keyword(key).is_some()
        {
            // `key=value` is an explicit assignment: its value goes, whatever it looks like.
            out.push_str(key);
            out.push('=');
            if value.is_empty() {
                *value_follows = Some(true);
            } else {
                out.push_str(REDACTED);
                *value_follows = None;
            }
        } else if let Some(always) = *value_follows {
            if let Some(next) = keyword(word) {
                // `Authorization: Bearer abc`: the scheme is kept, the credential follows it.
                out.push_str(word);
                *value_follows = Some(always || next);
            } else {
                out.push_str(if always || token_like(word) {
                    REDACTED
                } else {
                    word.as_str()
                });
                *value_follows = None;
            }
        } else {
            out.push_str(word);
            *value_follows = keyword(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '/' | '=') {
            word.push(c);
        } else {
            flush(&mut word, &mut out, &mut value_follows);
            // Only blanks, colons and quotes may stand between a keyword and its value.
            if !matches!(c, ' ' | '\t' | ':' | '"' | '\'') {
                value_follows = None;
            }
            out.push(c);
        }
    }
    flush(&mut word, &mut out, &mut value_follows);
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

    #[test]
    fn short_tokens_are_redacted() {
        let cases = [
            ("denied token=abc123", "denied token=[redacted]"),
            ("denied token=hunter", "denied token=[redacted]"),
            ("bad password: hunter2", "bad password: [redacted]"),
            ("bad password \"letmein\"", "bad password \"[redacted]\""),
            (
                "Authorization: Bearer s3cr3t",
                "Authorization: Bearer [redacted]",
            ),
            (
                "header Authorization: Basic dXNlcg",
                "header Authorization: Basic [redacted]",
            ),
            ("api_key = Zx81Kq", "api_key = [redacted]"),
            ("client-secret: Qw7", "client-secret: [redacted]"),
            ("session aB3dE5gH7jK9mN1p", "session [redacted]"),
            ("sha 0123456789abcdef0123", "sha [redacted]"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_credential_like(input), expected, "{input}");
        }
    }

    #[test]
    fn prose_around_keywords_is_kept() {
        for prose in [
            "cannot read token: file not found",
            "the token expired; log in again",
            "exit status 1: plugin crashed (code 7)",
            "connection refused, key not loaded",
            "see https://example.com/docs for help",
        ] {
            assert_eq!(redact_credential_like(prose), prose);
        }
    }
}
