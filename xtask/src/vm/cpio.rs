//! A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs.
//!
//! Built in Rust so the archive can hold device nodes and root-owned files without running as
//! root, and so the layout is exactly what the harness asks for.
use std::io::{self, Write};

/// One archive member. Paths are relative (`bin/busybox`); parents must come first.
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    CharDev {
        path: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Writes `entries` followed by the trailer.
pub fn write(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let mut written = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let (path, mode, data, rdev): (&str, u32, &[u8], (u32, u32)) = match entry {
            Entry::Dir { path, mode } => (path, S_IFDIR | mode, &[], (0, 0)),
            Entry::File { path, mode, data } => (path, S_IFREG | mode, data, (0, 0)),
            Entry::CharDev {
                path,
                mode,
                major,
                minor,
            } => (path, S_IFCHR | mode, &[], (*major, *minor)),
        };
        let nlink = if matches!(entry, Entry::Dir { .. }) {
            2
        } else {
            1
        };
        written += member(out, written, ino, mode, nlink, rdev, path, data)?;
    }
    member(out, written, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "one field per newc header column"
)]
fn member(
    out: &mut impl Write,
    offset: usize,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    path: &str,
    data: &[u8],
) -> io::Result<usize> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "member larger than 4 GiB"))?;
    let name_size = u32::try_from(path.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path too long"))?;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {maj:08x}{min:08x}{rmaj:08x}{rmin:08x}{name_size:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        maj = 0,
        min = 0,
        rmaj = rdev.0,
        rmin = rdev.1,
        check = 0,
    );
    let mut n = 0;
    out.write_all(header.as_bytes())?;
    out.write_all(path.as_bytes())?;
    out.write_all(&[0])?;
    n += header.len() + path.len() + 1;
    n += pad(out, offset + n)?;
    out.write_all(data)?;
    n += data.len();
    n += pad(out, offset + n)?;
    Ok(n)
}

/// Pads to the next multiple of four bytes.
fn pad(out: &mut impl Write, position: usize) -> io::Result<usize> {
    let padding = (4 - position % 4) % 4;
    out.write_all(&[0u8; 3][..padding])?;
    Ok(padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_entry_is_aligned_and_ends_with_trailer() {
        let mut out = Vec::new();
        write(
            &mut out,
            &[Entry::File {
                path: "init".into(),
                mode: 0o755,
                data: b"#!/bin/sh\n".to_vec(),
            }],
        )
        .expect("writing to a Vec");
        assert!(out.starts_with(b"070701"));
        // 110-byte header + "init\0" = 115 → padded to 116; then 10 data bytes → 128.
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701");
        let tail = String::from_utf8_lossy(&out[128..]);
        assert!(tail.contains("TRAILER!!!"));
        assert_eq!(out.len() % 4, 0);
        // mode field of the first header: regular file 0755.
        assert_eq!(&out[14..22], b"000081ed");
    }

    #[test]
    fn write_char_device_records_rdev() {
        let mut out = Vec::new();
        write(
            &mut out,
            &[Entry::CharDev {
                path: "dev/console".into(),
                mode: 0o600,
                major: 5,
                minor: 1,
            }],
        )
        .expect("writing to a Vec");
        // rdevmajor and rdevminor are header columns 9 and 10 (8 hex digits each after "070701").
        assert_eq!(&out[6 + 8 * 9..6 + 8 * 10], b"00000005");
        assert_eq!(&out[6 + 8 * 10..6 + 8 * 11], b"00000001");
        assert_eq!(&out[14..22], b"00002180");
    }
}
