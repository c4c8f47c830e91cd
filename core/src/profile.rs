//! Profiles, the rules that do not depend on the wire or the store: what an avatar must be
//! (XEP-0084 / XEP-0153: an image, at most [`AVATAR_MAX_BYTES`], whose SHA-1 is its id) and what
//! a nickname or name may hold (XEP-0172, vCard: text without control characters, at most
//! [`NAME_MAX_CHARS`]). The engine applies them to what peers publish, [`crate::Client`] to what
//! the user picks, so an avatar or a name is checked the same way whichever side it comes from.

use sha1::{Digest, Sha1};

/// The largest avatar stored or published (bytes). XEP-0084 avatars are small pictures; a peer
/// announcing a larger one is not fetched, and a larger picked file is refused with this figure.
pub const AVATAR_MAX_BYTES: usize = 512 * 1024;

/// The largest avatar the user may publish (bytes). Published base64-encoded in one stanza, it
/// must stay under the servers' stanza limits with room to spare: Prosody's
/// `c2s_stanza_size_limit` and ejabberd's shipped `max_stanza_size` are both 256 KiB, and a
/// server closes the stream on a larger stanza (the publish would then end every session that
/// tells it). 128 KiB is 171 KiB in base64.
pub const OWN_AVATAR_MAX_BYTES: usize = 128 * 1024;

/// The longest nickname or name kept (characters).
pub const NAME_MAX_CHARS: usize = 100;

/// Why an avatar or a name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More bytes than [`AVATAR_MAX_BYTES`].
    #[error("the avatar is {size} bytes, more than the {max} an avatar may have")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not a PNG, JPEG, GIF or WebP image.
    #[error("the avatar is not an image (neither PNG, JPEG, GIF nor WebP)")]
    NotAnImage,
    /// The bytes' SHA-1 is not the id they were announced with.
    #[error("the avatar's data does not match its announced hash {announced} (it is {actual})")]
    HashMismatch {
        /// The id announced.
        announced: String,
        /// The hash of the bytes.
        actual: String,
    },
    /// The type announced is not the type of the bytes.
    #[error("the avatar was announced as {announced} but is {actual}")]
    WrongType {
        /// The type announced.
        announced: String,
        /// The type of the bytes.
        actual: &'static str,
    },
    /// A name with control characters (a line break, an escape sequence, a NUL...).
    #[error("the {what} contains control characters")]
    ControlCharacters {
        /// Which name.
        what: &'static str,
    },
    /// A name longer than [`NAME_MAX_CHARS`].
    #[error("the {what} is {chars} characters long, more than {max}")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// Its length.
        chars: usize,
        /// The cap.
        max: usize,
    },
}

/// An avatar that passed [`check_avatar`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avatar {
    /// SHA-1 of the bytes, lowercase hex (its id in XEP-0084 and XEP-0153).
    pub sha1: String,
    /// The image type the bytes are.
    pub mime: &'static str,
    /// Width and height, when the format says them in its header (PNG, GIF).
    pub size: Option<(u16, u16)>,
    /// The bytes.
    pub data: Vec<u8>,
}

/// SHA-1 of `data`, lowercase hex.
pub fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The image type of `data` from its first bytes, if it is one Tether shows.
pub fn sniff(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Width and height from a PNG's IHDR or a GIF's screen descriptor.
fn dimensions(data: &[u8], mime: &str) -> Option<(u16, u16)> {
    match mime {
        "image/png" if data.len() >= 24 && &data[12..16] == b"IHDR" => {
            let w = u32::from_be_bytes(data[16..20].try_into().ok()?);
            let h = u32::from_be_bytes(data[20..24].try_into().ok()?);
            Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
        }
        "image/gif" if data.len() >= 10 => Some((
            u16::from_le_bytes([data[6], data[7]]),
            u16::from_le_bytes([data[8], data[9]]),
        )),
        _ => None,
    }
}

/// Checks an avatar: at most [`AVATAR_MAX_BYTES`], an image, and (when it came with an id, and a
/// type) those are its SHA-1 and its type. The size is checked before anything is hashed.
pub fn check_avatar(
    data: Vec<u8>,
    announced_sha1: Option<&str>,
    announced_type: Option<&str>,
) -> Result<Avatar, Refusal> {
    if data.len() > AVATAR_MAX_BYTES {
        return Err(Refusal::TooLarge {
            size: data.len(),
            max: AVATAR_MAX_BYTES,
        });
    }
    let mime = sniff(&data).ok_or(Refusal::NotAnImage)?;
    let sha1 = sha1_hex(&data);
    if let Some(announced) = announced_sha1 {
        if !announced.eq_ignore_ascii_case(&sha1) {
            return Err(Refusal::HashMismatch {
                announced: announced.to_owned(),
                actual: sha1,
            });
        }
    }
    if let Some(announced) = announced_type {
        // "image/jpg" is a common misspelling of a real JPEG: not a lie about the bytes.
        let same = announced.eq_ignore_ascii_case(mime)
            || (mime == "image/jpeg" && announced.eq_ignore_ascii_case("image/jpg"));
        if !same {
            return Err(Refusal::WrongType {
                announced: announced.to_owned(),
                actual: mime,
            });
        }
    }
    Ok(Avatar {
        size: dimensions(&data, mime),
        sha1,
        mime,
        data,
    })
}

/// Checks an avatar the user picked to publish: [`check_avatar`] within
/// [`OWN_AVATAR_MAX_BYTES`].
pub fn check_own_avatar(data: Vec<u8>) -> Result<Avatar, Refusal> {
    if data.len() > OWN_AVATAR_MAX_BYTES {
        return Err(Refusal::TooLarge {
            size: data.len(),
            max: OWN_AVATAR_MAX_BYTES,
        });
    }
    check_avatar(data, None, None)
}

/// Checks a nickname or name (`what` names it in the refusal): trimmed, an empty one is none.
pub fn check_name(text: &str, what: &'static str) -> Result<Option<String>, Refusal> {
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err(Refusal::ControlCharacters { what });
    }
    let chars = text.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(Refusal::NameTooLong {
            what,
            chars,
            max: NAME_MAX_CHARS,
        });
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x3 PNG's first bytes (signature and IHDR), enough for the checks.
    pub(crate) fn png(seed: u8) -> Vec<u8> {
        let mut d = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x02\0\0\0\x03".to_vec();
        d.extend_from_slice(&[8, 6, 0, 0, 0, seed]);
        d
    }

    #[test]
    fn an_image_passes_with_its_hash_type_and_size() {
        let data = png(1);
        let sha1 = sha1_hex(&data);
        let a = check_avatar(data.clone(), Some(&sha1.to_uppercase()), Some("image/png")).unwrap();
        assert_eq!(a.sha1, sha1);
        assert_eq!(a.mime, "image/png");
        assert_eq!(a.size, Some((2, 3)));
        assert_eq!(a.data, data);
        let jpeg = [0xff, 0xd8, 0xff, 0xe0, 0, 0x10];
        assert_eq!(
            check_avatar(jpeg.to_vec(), None, Some("image/jpg"))
                .unwrap()
                .mime,
            "image/jpeg"
        );
    }

    #[test]
    fn an_oversized_a_non_image_a_forged_hash_and_a_false_type_are_refused() {
        let big = {
            let mut d = png(0);
            d.resize(AVATAR_MAX_BYTES + 1, 0);
            d
        };
        assert_eq!(
            check_avatar(big, None, None),
            Err(Refusal::TooLarge {
                size: AVATAR_MAX_BYTES + 1,
                max: AVATAR_MAX_BYTES
            })
        );
        assert_eq!(
            check_avatar(b"<svg onload=alert(1)>".to_vec(), None, None),
            Err(Refusal::NotAnImage)
        );
        let forged = check_avatar(png(2), Some(&sha1_hex(&png(3))), None);
        assert!(
            matches!(forged, Err(Refusal::HashMismatch { .. })),
            "{forged:?}"
        );
        assert_eq!(
            check_avatar(png(2), None, Some("image/gif")),
            Err(Refusal::WrongType {
                announced: "image/gif".into(),
                actual: "image/png"
            })
        );
    }

    #[test]
    fn an_avatar_to_publish_stays_within_the_servers_stanza_limits() {
        let mut d = png(0);
        d.resize(OWN_AVATAR_MAX_BYTES, 0);
        assert!(check_own_avatar(d.clone()).is_ok());
        // Base64 and the stanza around it still fit a 256 KiB stanza limit.
        assert!(d.len().div_ceil(3) * 4 + 1024 < 256 * 1024);
        d.push(0);
        assert_eq!(
            check_own_avatar(d),
            Err(Refusal::TooLarge {
                size: OWN_AVATAR_MAX_BYTES + 1,
                max: OWN_AVATAR_MAX_BYTES
            })
        );
    }

    #[test]
    fn names_are_trimmed_and_control_characters_or_length_refused() {
        assert_eq!(check_name("  Bob  ", "nickname"), Ok(Some("Bob".into())));
        assert_eq!(check_name("   ", "nickname"), Ok(None));
        assert_eq!(
            check_name("Bob\u{1b}[31m", "nickname"),
            Err(Refusal::ControlCharacters { what: "nickname" })
        );
        assert_eq!(
            check_name("Line\nbreak", "name"),
            Err(Refusal::ControlCharacters { what: "name" })
        );
        assert!(matches!(
            check_name(&"x".repeat(NAME_MAX_CHARS + 1), "name"),
            Err(Refusal::NameTooLong { chars: 101, .. })
        ));
        assert_eq!(check_name("Zoë 🦊", "name"), Ok(Some("Zoë 🦊".into())));
    }
}
