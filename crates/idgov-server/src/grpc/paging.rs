//! Page sizes and opaque page tokens.

use super::status::to_status;
use crate::error::AppError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;

pub const DEFAULT_PAGE_SIZE: i64 = 100;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The page size to use: 0 means the default; larger than the maximum is
/// clamped; negative is an error.
pub fn page_size(requested: i32) -> Result<i64, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(to_status(AppError::invalid(
            "page_size",
            "must not be negative",
        ))),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// Encodes the key of the last item of a page.
pub fn encode(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{key}"))
}

/// Decodes a page token into the key to continue after ("" for none).
pub fn decode(token: &str) -> Result<String, Status> {
    if token.is_empty() {
        return Ok(String::new());
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("v1:").map(String::from))
        .ok_or_else(|| {
            to_status(AppError::invalid(
                "page_token",
                "is not a token this server issued; start again without one",
            ))
        })
}

/// Decodes a page token holding a number (0 for none).
pub fn decode_i64(token: &str) -> Result<i64, Status> {
    let s = decode(token)?;
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| {
        to_status(AppError::invalid(
            "page_token",
            "is not a token this server issued; start again without one",
        ))
    })
}

/// How large a page's items may be, encoded, before the page stops early
/// (the message limit is 4 MiB): a page of long values holds fewer items,
/// and the next page token goes on from the last one kept.
pub const PAGE_BYTES: usize = 3 * 1024 * 1024;

/// How many of `items`, from the first, fit in `budget` bytes encoded (at
/// least one, so a page always moves on).
pub fn fitting<M: prost::Message>(items: &[M], budget: usize) -> usize {
    let mut used = 0;
    for (i, m) in items.iter().enumerate() {
        // The field's tag and length prefix cost a few bytes more.
        used += m.encoded_len() + 8;
        if used > budget {
            return i.max(1);
        }
    }
    items.len()
}

/// Cuts `items` (fetched with limit + 1) to the page and returns the token
/// of the next page, if there is one.
pub fn finish<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        let next = items.last().map(|i| encode(&key(i))).unwrap_or_default();
        (items, next)
    } else {
        (items, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(decode(&encode("E100")).ok(), Some("E100".to_string()));
        assert!(decode("not-a-token!").is_err());
        assert_eq!(decode_i64(&encode("42")).ok(), Some(42));
        let (page, next) = finish(vec![1, 2, 3], 2, |i| i.to_string());
        assert_eq!(page, [1, 2]);
        assert_eq!(decode(&next).ok(), Some("2".to_string()));
        assert!(page_size(-1).is_err());
        assert_eq!(page_size(5000).ok(), Some(MAX_PAGE_SIZE));
    }
}
