//! Decoding a `Transfer-Encoding: chunked` body (RFC 9112 §7.1).
//!
//! The decoder works on whatever has arrived so far and either finishes the
//! body, asks for more bytes, or fails. The body limit is checked as chunks
//! are declared, so a client cannot make the server buffer past it.

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 1024;

/// Bytes of framing (size lines, extensions, CRLFs, trailers) a body may
/// carry beyond its limit: a body of many tiny chunks is refused before it
/// costs the server more than this on top of the body itself.
pub(crate) const MAX_FRAMING: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkedError {
    Malformed,
    TooLarge,
}

/// Decodes a chunked body at the start of `input`.
///
/// Returns the body and the number of bytes it took on the wire, or `None`
/// when `input` ends before the last chunk and trailers do. A body over
/// `max_body`, or whose wire form is over it by more than [`MAX_FRAMING`],
/// is `TooLarge`.
pub(crate) fn decode(
    input: &[u8],
    max_body: usize,
) -> Result<Option<(Vec<u8>, usize)>, ChunkedError> {
    let max_wire = max_body.saturating_add(MAX_FRAMING);
    // Everything in `input` so far belongs to this body.
    let incomplete = || {
        if input.len() > max_wire {
            Err(ChunkedError::TooLarge)
        } else {
            Ok(None)
        }
    };
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        if at > max_wire {
            return Err(ChunkedError::TooLarge);
        }
        let Some(line) = next_line(&input[at..])? else {
            return incomplete();
        };
        let size = chunk_size(line)?;
        at += line.len() + 2;
        if size == 0 {
            return match skip_trailers(&input[at..])? {
                Some(len) => Ok(Some((body, at + len))),
                None => incomplete(),
            };
        }
        if body.len().saturating_add(size) > max_body {
            return Err(ChunkedError::TooLarge);
        }
        let Some(data) = input.get(at..at + size + 2) else {
            return incomplete();
        };
        if &data[size..] != b"\r\n" {
            return Err(ChunkedError::Malformed);
        }
        body.extend_from_slice(&data[..size]);
        at += size + 2;
    }
}

/// The bytes before the next CRLF, or `None` if it has not arrived yet.
fn next_line(input: &[u8]) -> Result<Option<&[u8]>, ChunkedError> {
    match input.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) if end <= MAX_LINE => Ok(Some(&input[..end])),
        Some(_) => Err(ChunkedError::Malformed),
        None if input.len() > MAX_LINE => Err(ChunkedError::Malformed),
        None => Ok(None),
    }
}

/// The hexadecimal size at the start of a chunk line; extensions ignored.
fn chunk_size(line: &[u8]) -> Result<usize, ChunkedError> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 8 {
        return Err(ChunkedError::Malformed);
    }
    digits.iter().try_fold(0usize, |size, digit| {
        let value = (*digit as char)
            .to_digit(16)
            .ok_or(ChunkedError::Malformed)?;
        Ok(size * 16 + value as usize)
    })
}

/// Length of the trailer section including its final blank line.
fn skip_trailers(input: &[u8]) -> Result<Option<usize>, ChunkedError> {
    let mut at = 0;
    loop {
        let Some(line) = next_line(&input[at..])? else {
            return Ok(None);
        };
        at += line.len() + 2;
        if line.is_empty() {
            return Ok(Some(at));
        }
        if at > 4 * MAX_LINE {
            return Err(ChunkedError::Malformed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_chunks_with_extensions_and_trailers() {
        let wire = b"4;name=v\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let (body, used) = decode(wire, 100).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&wire[used..], b"NEXT");
    }

    #[test]
    fn waits_for_more_bytes_at_every_cut() {
        let wire = b"4\r\nWiki\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            assert_eq!(decode(&wire[..cut], 100), Ok(None), "cut at {cut}");
        }
        assert!(decode(wire, 100).unwrap().is_some());
    }

    #[test]
    fn refuses_bodies_over_the_limit_before_buffering_them() {
        assert_eq!(decode(b"ffff\r\n", 100), Err(ChunkedError::TooLarge));
    }

    #[test]
    fn refuses_a_body_of_tiny_chunks_once_its_framing_outgrows_the_allowance() {
        // One-byte chunks with long extensions: 10 bytes of body in all,
        // far more than MAX_FRAMING on the wire.
        let chunk = format!("1;{}\r\nx\r\n", "e".repeat(1000));
        let wire = chunk.repeat(MAX_FRAMING / chunk.len() + 2);
        assert_eq!(decode(wire.as_bytes(), 100), Err(ChunkedError::TooLarge));
        // The same framing under the allowance is still read to its end.
        let small = format!("{}0\r\n\r\n", chunk.repeat(3));
        assert_eq!(decode(small.as_bytes(), 100).unwrap().unwrap().0, b"xxx");
    }

    #[test]
    fn refuses_malformed_sizes_and_missing_crlf() {
        assert_eq!(decode(b"zz\r\n", 100), Err(ChunkedError::Malformed));
        assert_eq!(decode(b"2\r\nabXY", 100), Err(ChunkedError::Malformed));
        assert_eq!(
            decode(b"123456789\r\n", usize::MAX),
            Err(ChunkedError::Malformed)
        );
        assert_eq!(decode(&[b'1'; 2000], 100), Err(ChunkedError::Malformed));
    }
}
