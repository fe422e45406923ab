"""Files through the C reader (src.c + files.c): a plain file (mapped), gzip inflated on its own
thread (ISA-L, or zlib), gzip of several members and a pipe give the same books as the bytes fed
from memory; a truncated or corrupt gzip gives one clear error."""
import errno
import gzip
import os
import struct
import subprocess
import sys
import threading

import pytest

from hftcap import _core
from hftcap.lab import gen
from bounds import bound

# ~10 MiB: units straddle the reader's 1 MiB chunks and 8 MiB slices
DATA = gen.generate(3, 400, 330_000, "day")


def books_state(b):
    st = b.stats()
    books = {}
    for loc, sym in b.symbols():
        raw_b, raw_a = b.book_raw(loc, 1 << 20)
        books[loc] = (sym, raw_b, raw_a, b.info(loc)["volume"])
    return st, books


@pytest.fixture(scope="module")
def in_memory():
    b = _core.Books(1024)
    b.feed(DATA)
    return books_state(b)


def write_gz(path, data, members=1):
    step = len(data) // members + 1
    with open(path, "wb") as f:
        for i in range(0, len(data), step):  # members split at arbitrary bytes, mid-record
            f.write(gzip.compress(data[i:i + step], compresslevel=1))


def fed(path):
    b = _core.Books(1024)
    res = b.feed_file(str(path))
    return res, books_state(b)


def test_isal_is_the_inflater():
    assert _core.inflater() == "isa-l"  # setup.sh installs libisal-dev; zlib is the fallback


@pytest.mark.parametrize("kind", ["plain", "gzip", "gzip-3-members", "pipe-plain", "pipe-gzip"])
def test_same_books_from_every_input(tmp_path, in_memory, kind):
    p = tmp_path / ("f.itch" + (".gz" if "gzip" in kind else ""))
    if kind.endswith("gzip") or kind == "gzip-3-members":
        write_gz(p, DATA, 3 if "members" in kind else 1)
    else:
        p.write_bytes(DATA)
    if kind.startswith("pipe"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        src = p.read_bytes()

        def writer():
            with open(fifo, "wb") as f:
                f.write(src)
        t = threading.Thread(target=writer)
        t.start()
        res, state = fed(fifo)
        t.join(timeout=bound(60))
        assert not t.is_alive()
    else:
        res, state = fed(p)
    assert res["format"] == "nasdaq" and res["gzip"] == ("gzip" in kind)
    assert res["inflater"] == ("isa-l" if "gzip" in kind else "none")
    assert state == in_memory
    assert state[0]["drops"]["file_truncated"] == 0


def test_read_file_plain_gzip_and_first_records(tmp_path):
    p, g = tmp_path / "f.itch", tmp_path / "f.itch.gz"
    p.write_bytes(DATA)
    write_gz(g, DATA, 2)
    assert _core.read_file(str(p)) == DATA == _core.read_file(str(g))
    first = _core.read_file(str(g), 1000)
    off = 0
    for _ in range(1000):
        off += 2 + struct.unpack_from(">H", DATA, off)[0]
    assert first == DATA[:off]


@pytest.mark.parametrize("cut", [5, 11, 4000, 1 << 20, -9, -1])
def test_truncated_gzip_is_one_error(tmp_path, cut):
    g = tmp_path / "t.itch.gz"
    whole = gzip.compress(DATA, compresslevel=1)
    g.write_bytes(whole[:cut])
    b = _core.Books(1024)
    with pytest.raises(OSError) as e:
        b.feed_file(str(g))
    assert e.value.errno == errno.EPIPE and "truncated" in e.value.strerror
    with pytest.raises(OSError) as e:
        _core.read_file(str(g))
    assert e.value.errno == errno.EPIPE


@pytest.mark.parametrize("where", [0.001, 0.3, 0.7])
def test_corrupt_gzip_is_one_error(tmp_path, where):
    whole = bytearray(gzip.compress(DATA, compresslevel=1))
    i = int(len(whole) * where) + 10
    whole[i:i + 8] = bytes(x ^ 0x5A for x in whole[i:i + 8])
    g = tmp_path / "c.itch.gz"
    g.write_bytes(whole)
    with pytest.raises(OSError) as e:
        _core.Books(1024).feed_file(str(g))
    assert e.value.errno in (errno.EBADMSG, errno.EPIPE), e.value
    assert "gzip stream is" in e.value.strerror


def test_bad_checksum_is_corrupt(tmp_path):
    whole = bytearray(gzip.compress(DATA[:100_000]))
    whole[-8] ^= 1  # the CRC32 in the trailer
    g = tmp_path / "crc.itch.gz"
    g.write_bytes(whole)
    with pytest.raises(OSError) as e:
        _core.Books(1024).feed_file(str(g))
    assert e.value.errno == errno.EBADMSG and "corrupt" in e.value.strerror


@pytest.mark.parametrize("field", [-8, -4])  # the CRC-32, the length (ISIZE)
def test_bad_trailer_of_a_middle_member_is_corrupt_where_that_member_ends(tmp_path, in_memory, field):
    """A mapped gzip's members are checked on the reader's side: a bad trailer in the first of
    three members is an error after exactly that member's bytes, never a silent pass."""
    parts = [DATA[:3_000_000], DATA[3_000_000:6_000_000], DATA[6_000_000:]]
    members = [bytearray(gzip.compress(x, compresslevel=1)) for x in parts]
    members[0][field] ^= 1
    g = tmp_path / "m.itch.gz"
    g.write_bytes(b"".join(members))
    with pytest.raises(OSError) as e:
        _core.Books(1024).feed_file(str(g))
    assert e.value.errno == errno.EBADMSG and "corrupt" in e.value.strerror
    assert f"after {len(parts[0])} decompressed bytes" in e.value.strerror
    members[0][field] ^= 1  # the same members, the trailer restored: the whole books
    g.write_bytes(b"".join(members))
    assert fed(g)[1] == in_memory


def test_unprefaulted_books_are_the_same_books(tmp_path, in_memory):
    g = tmp_path / "f.itch.gz"
    write_gz(g, DATA)
    b = _core.Books(1 << 20, prefault=False)
    b.feed_file(str(g))
    assert books_state(b) == in_memory


def test_hftcap_book_on_a_truncated_gz_is_one_error_line(tmp_path):
    g = tmp_path / "t.itch.gz"
    g.write_bytes(gzip.compress(DATA, compresslevel=1)[:-100])
    exe = os.path.join(os.path.dirname(sys.executable), "hftcap")
    cp = subprocess.run([exe, "book", str(g)], capture_output=True, text=True, timeout=bound(120))
    assert cp.returncode == 1, cp
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("hftcap: error: ") and "truncated" in lines[0], cp.stderr
    assert lines[1].startswith("hint: ") and "Traceback" not in cp.stderr


@pytest.mark.parametrize("inflater", ["isa-l", "zlib"])
def test_reader_under_sanitizers(tmp_path, inflater):
    """tests/c/src_fuzz.c: plain, gzip, 2-member gzip, 40 cuts and 40 corruptions, an early
    close, under ASan/UBSan, with each inflater."""
    from sanitized import ROOT, build_and_run
    isal = inflater == "isa-l"
    run = build_and_run(tmp_path, ROOT / "tests" / "c" / "src_fuzz.c",
                        ["files", "src", "book", "itch", "mold", "gen"], [tmp_path],
                        flags=["-DHC_HAVE_ISAL"] if isal else [],
                        libs=(["-lisal"] if isal else []) + ["-lz", "-lm", "-lpthread"], timeout=bound(300))
    assert run.stdout.startswith(f"ok inflater={inflater} "), run.stdout


def test_plain_file_larger_than_the_populate_lead(tmp_path):
    """A mapped plain file beyond the 128 MiB that the source's thread maps in ahead of the
    reader: every record is read (the thread waits for the reader, then goes on), and a reader
    that stops early closes at once (the waiting thread is woken and joined)."""
    p = tmp_path / "zeros.itch"
    with open(p, "wb") as f:  # sparse: 200 MiB of empty records (length 0)
        f.truncate(200 << 20)
    b = _core.Books(1024)
    res = b.feed_file(str(p))
    assert res["bytes"] == 200 << 20
    assert b.stats()["drops"]["empty"] == (200 << 20) // 2
    t = threading.Thread(target=_core.read_file, args=(str(p), 1000))
    t.start()
    t.join(timeout=bound(30))
    assert not t.is_alive()


XINUSE_C = r"""
#include <cpuid.h>
int xinuse_supported(void) { unsigned a, b, c, d; return __get_cpuid_count(0xd, 1, &a, &b, &c, &d) && (a >> 2 & 1); }
unsigned long long xinuse(void) { unsigned lo, hi; __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
                                  return (unsigned long long)hi << 32 | lo; }
"""
DIRTY_UPPER = 1 << 2 | 1 << 6  # XINUSE: upper halves of ymm0-15 (AVX), of zmm0-15 (ZMM_Hi256)


def test_gzip_replay_leaves_no_dirty_upper_vector_state(tmp_path):
    """ISA-L's AVX-512 CRC-32 runs on the thread that reads the chunks (the books' thread, and the
    caller's for the first one) and leaves the vector registers' upper halves dirty; every legacy-SSE
    instruction of that thread then pays (the books' compares: 312 -> 413 ms on the day profile
    after one gzip replay). src.c clears them after each call: XGETBV(1) on the calling thread shows
    the state, and a raw ISA-L call from here shows that this CPU has the hazard at all."""
    import ctypes
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("XGETBV and the AVX upper state are x86 only")
    so = tmp_path / "xinuse.so"
    (tmp_path / "xinuse.c").write_text(XINUSE_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(so), str(tmp_path / "xinuse.c")], check=True)
    x = ctypes.CDLL(str(so))
    x.xinuse.restype = ctypes.c_ulonglong
    if not x.xinuse_supported():
        pytest.skip("this CPU has no XGETBV(1) (XINUSE)")
    isal = ctypes.CDLL("libisal.so.2")
    buf = ctypes.create_string_buffer(1 << 16)
    p = tmp_path / "f.itch.gz"
    write_gz(p, DATA[:2 << 20])
    for _ in range(2):  # twice: the thread dirtied before each replay, clean after it
        isal.crc32_gzip_refl(0, buf, len(buf))
        if not x.xinuse() & DIRTY_UPPER:
            pytest.skip("ISA-L's CRC-32 leaves no dirty upper state on this CPU")
        b = _core.Books(1024)
        b.feed_file(str(p))
        assert b.stats()["messages"], "the replay applied nothing"
        assert not x.xinuse() & DIRTY_UPPER, hex(x.xinuse())
