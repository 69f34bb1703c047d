//! Byte-level helpers for writing a response body straight to a socket, the way nginx's own
//! filters would have written it: HTTP/1.1 chunk framing and resuming after a partial write.

/// The line that opens an HTTP/1.1 chunk of `size` bytes, as nginx's chunked filter writes it
/// (lowercase hex, no leading zeros, CRLF), in a fixed buffer: (bytes, length used).
pub fn chunk_head(size: usize) -> ([u8; 18], usize) {
    let mut b = [0u8; 18];
    let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in b[..digits].iter_mut().enumerate() {
        let d = (size >> (4 * (digits - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[d];
    }
    b[digits] = b'\r';
    b[digits + 1] = b'\n';
    (b, digits + 2)
}

/// The line that closes a chunk.
pub const CHUNK_TAIL: &[u8] = b"\r\n";

/// The sizes of the non-empty messages of a gathered write: the messages are the parts
/// `[..ends[0]]`, `[ends[0]..ends[1]]`… of parts of lengths `lens`.
pub fn message_sizes<'a, L>(lens: L, ends: &'a [usize]) -> impl Iterator<Item = usize> + 'a
where
    L: IntoIterator<Item = usize>,
    L::IntoIter: 'a,
{
    let mut lens = lens.into_iter();
    let mut start = 0;
    ends.iter()
        .map(move |&end| {
            let n = end.saturating_sub(start);
            start = end.max(start);
            lens.by_ref().take(n).sum::<usize>()
        })
        .filter(|&s| s > 0)
}

/// After a write of `written` bytes out of segments of lengths `lens` (in order), the
/// unsent part of each segment: (index, offset of its first unsent byte), empty segments
/// and fully written ones left out.
pub fn unsent(lens: &[usize], written: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut skip = written;
    lens.iter().enumerate().filter_map(move |(i, &len)| {
        if skip >= len {
            skip -= len;
            None
        } else {
            Some((i, std::mem::take(&mut skip)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(size: usize) -> String {
        let (b, n) = chunk_head(size);
        String::from_utf8(b[..n].to_vec()).unwrap()
    }

    #[test]
    fn chunk_heads_match_nginx_chunked_filter() {
        // nginx: ngx_sprintf(chunk, "%xO" CRLF, size)
        assert_eq!(head(0), "0\r\n");
        assert_eq!(head(1), "1\r\n");
        assert_eq!(head(15), "f\r\n");
        assert_eq!(head(16), "10\r\n");
        assert_eq!(head(255), "ff\r\n");
        assert_eq!(head(4096), "1000\r\n");
        assert_eq!(head(0xabcdef), "abcdef\r\n");
        assert_eq!(head(usize::MAX), "ffffffffffffffff\r\n");
        for size in [2usize, 100, 65_535, 1 << 20, 123_456_789] {
            assert_eq!(head(size), format!("{size:x}\r\n"));
        }
    }

    #[test]
    fn unsent_resumes_inside_the_segment_where_the_write_stopped() {
        let lens = [3, 0, 5, 2];
        let all: Vec<_> = unsent(&lens, 0).collect();
        assert_eq!(all, [(0, 0), (2, 0), (3, 0)]);
        assert_eq!(
            unsent(&lens, 2).collect::<Vec<_>>(),
            [(0, 2), (2, 0), (3, 0)]
        );
        assert_eq!(unsent(&lens, 3).collect::<Vec<_>>(), [(2, 0), (3, 0)]);
        assert_eq!(unsent(&lens, 7).collect::<Vec<_>>(), [(2, 4), (3, 0)]);
        assert_eq!(unsent(&lens, 9).collect::<Vec<_>>(), [(3, 1)]);
        assert_eq!(unsent(&lens, 10).count(), 0);
        assert_eq!(unsent(&[], 0).count(), 0);
    }

    #[test]
    fn message_sizes_of_a_gathered_write_leave_empty_messages_out() {
        // Messages: [3, 2] (one with padding), [], [0], [4].
        let lens = [3, 2, 0, 4];
        let ends = [2, 2, 3, 4];
        assert_eq!(message_sizes(lens, &ends).collect::<Vec<_>>(), [5, 4]);
        assert_eq!(message_sizes([7], &[1]).collect::<Vec<_>>(), [7]);
        assert_eq!(message_sizes([0usize; 0], &[]).count(), 0);
    }

    #[test]
    fn unsent_bytes_are_exactly_the_tail_of_the_concatenation() {
        let segs: [&[u8]; 4] = [b"abc", b"", b"defgh", b"ij"];
        let whole: Vec<u8> = segs.concat();
        let lens: Vec<usize> = segs.iter().map(|s| s.len()).collect();
        for written in 0..=whole.len() {
            let rest: Vec<u8> = unsent(&lens, written)
                .flat_map(|(i, at)| segs[i][at..].iter().copied())
                .collect();
            assert_eq!(rest, whole[written..], "written {written}");
        }
    }
}
