//! Secrets in configuration files: the random ones `create` writes, and the
//! well-known ones `checkconfig` warns about.
//!
//! A password printed in a manual is no secret: Buildbot's `change`/`changepw`,
//! autobot's `--passwd passwd`, the `secret` of every example. [`is_documented`]
//! knows every value our documents (README, `master.ini.example`, this crate's
//! comments) and the Buildbot 0.7 manual show, so that a master configured with one
//! of them is called out instead of quietly letting strangers in. [`random`] makes
//! the values `create` writes instead, from the operating system's CSPRNG (ring's
//! `SystemRandom`), in an alphabet without look-alike characters so that a person
//! can copy one by hand.

use ring::rand::{SecureRandom, SystemRandom};

/// Characters of a generated secret: letters and digits without the ones that are
/// easily confused when read or typed (`0`/`O`/`o`, `1`/`l`/`I`).
pub const ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";

/// Length of a generated password: 22 characters of a 56-letter alphabet are
/// about 128 bits.
pub const PASSWORD_LEN: usize = 22;

/// Every password, user name or secret a document shows as an example or a
/// default, lower-cased. A value equal to one of these (ignoring case and
/// surrounding blanks) is no secret.
const DOCUMENTED: &[&str] = &[
    // Buildbot's sendchange defaults and autobot's create defaults (until 0.2).
    "changepw",
    "passwd",
    // README.md, master.ini.example, DESIGN.md and this crate's messages.
    "secret",
    "another-secret",
    "change-me",
    "pw",
    "password",
    "mypasswd",
    // The Buildbot 0.7.3 manual's examples.
    "sekrit",
    "bot1passwd",
    "solarispasswd",
    "bsdpasswd",
    "debugpassword",
    "mysecretpassword",
];

/// Whether `value` is a secret printed in the documentation (see `DOCUMENTED`).
pub fn is_documented(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    DOCUMENTED.contains(&v.as_str())
}

/// The operating system's random generator failed (it does not, on Linux, once
/// the kernel's pool is initialised; the error is there so nothing is written
/// with a weak value if it ever does).
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed; cannot make a secret")]
pub struct RandomError;

/// A random string of `len` characters from [`ALPHABET`], drawn from the
/// system CSPRNG without modulo bias (bytes at or above the largest multiple of
/// the alphabet's size are drawn again).
pub fn random(len: usize) -> Result<String, RandomError> {
    let rng = SystemRandom::new();
    let n = ALPHABET.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf).map_err(|_| RandomError)?;
        for &b in &buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % n] as char);
            }
        }
    }
    Ok(out)
}

/// A random password of [`PASSWORD_LEN`] characters.
pub fn random_password() -> Result<String, RandomError> {
    random(PASSWORD_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_secrets_use_the_alphabet_and_differ() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)), "{a}");
        assert_ne!(a, b);
        assert!(!is_documented(&a));
        assert_eq!(random(0).unwrap(), "");
        assert_eq!(random(200).unwrap().len(), 200);
    }

    #[test]
    fn every_letter_of_the_alphabet_turns_up() {
        // 56 letters, 20000 draws: a letter that never comes up means a biased or
        // broken mapping (the chance of a miss by luck is below 1e-150).
        let s = random(20_000).unwrap();
        for c in ALPHABET {
            assert!(s.as_bytes().contains(c), "{} never drawn", *c as char);
        }
        for c in b"01lIoO" {
            assert!(!s.as_bytes().contains(c));
        }
    }

    #[test]
    fn documented_values_are_known_whatever_their_case() {
        for v in ["changepw", "passwd", " Secret ", "CHANGE-ME", "sekrit"] {
            assert!(is_documented(v), "{v}");
        }
        for v in ["", "changepw2", "x7Gq"] {
            assert!(!is_documented(v), "{v}");
        }
    }
}
