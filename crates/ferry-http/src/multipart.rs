//! The exact framing of a `multipart/byteranges` body (RFC 9110 §14.6), with its length known
//! before the first byte is sent.

use crate::range::ByteRange;

/// A fresh random multipart boundary (not found in file data except by a 2^-128 accident).
pub fn boundary() -> String {
    format!("ferry-{:032x}", rand::random::<u128>())
}

/// The framing of a `multipart/byteranges` body: before each range comes its header block,
/// after the last one the closing delimiter. `content_length` is the exact body length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The value of the response's `Content-Type` header.
    pub content_type: String,
    /// Each range with the bytes that precede its data.
    pub parts: Vec<(String, ByteRange)>,
    /// The bytes after the last part's data.
    pub trailer: String,
    /// Header blocks, data and trailer together.
    pub content_length: u64,
}

impl Multipart {
    /// Frames `ranges` of a representation of `total` bytes whose type is `part_type`.
    pub fn new(ranges: &[ByteRange], total: u64, part_type: &str, boundary: &str) -> Multipart {
        let parts: Vec<(String, ByteRange)> = ranges
            .iter()
            .map(|r| {
                let head = format!(
                    "\r\n--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: {}\r\n\r\n",
                    r.content_range(total)
                );
                (head, *r)
            })
            .collect();
        let trailer = format!("\r\n--{boundary}--\r\n");
        let content_length = parts
            .iter()
            .map(|(h, r)| h.len() as u64 + r.len())
            .sum::<u64>()
            + trailer.len() as u64;
        Multipart {
            content_type: format!("multipart/byteranges; boundary={boundary}"),
            parts,
            trailer,
            content_length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn multipart_framing() {
        let m = Multipart::new(&[r(0, 2), r(5, 6)], 10, "text/plain", "B");
        assert_eq!(m.content_type, "multipart/byteranges; boundary=B");
        let data = b"0123456789";
        let mut body = Vec::new();
        for (head, range) in &m.parts {
            body.extend_from_slice(head.as_bytes());
            body.extend_from_slice(&data[range.start as usize..range.end as usize]);
        }
        body.extend_from_slice(m.trailer.as_bytes());
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            "\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
             \r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-5/10\r\n\r\n5\
             \r\n--B--\r\n"
        );
        assert_eq!(m.content_length, body.len() as u64);
        let b = boundary();
        assert!(
            b.len() > 30 && b.len() <= 70,
            "RFC 2046 limits boundaries to 70 chars"
        );
        assert_ne!(b, boundary());
    }

    proptest! {
        #[test]
        fn multipart_length_is_exact(
            len in 1u64..5000,
            cuts in proptest::collection::vec((0u64..5000, 1u64..300), 1..40),
        ) {
            let ranges: Vec<ByteRange> = cuts.iter()
                .filter(|(a, _)| *a < len)
                .map(|&(a, n)| ByteRange { start: a, end: (a + n).min(len) })
                .collect();
            let m = Multipart::new(&ranges, len, "application/octet-stream", &boundary());
            let framed: u64 = m.parts.iter().map(|(h, r)| h.len() as u64 + r.len()).sum();
            prop_assert_eq!(m.content_length, framed + m.trailer.len() as u64);
        }
    }
}
