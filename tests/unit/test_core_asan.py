"""The C data plane alone (no Python) under AddressSanitizer and UBSan, with hostile input:
the live consumer (tests/c/feed_fuzz.c) and the ITCH/book/file readers (tests/c/itch_fuzz.c)."""
from __future__ import annotations

from sanitized import ROOT, build_and_run

FUZZ = ROOT / "tests" / "c"


def test_consumer_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, FUZZ / "feed_fuzz.c",
                        ["feed", "mold", "itch", "book", "files", "src", "gen", "hist", "snap", "join", "spin", "recovery"],
                        libs=["-lz", "-lm", "-lpthread"]).stdout
    assert out.startswith("ok ") and "samples=0" not in out


def test_readers_and_books_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, FUZZ / "itch_fuzz.c", ["itch", "book", "files", "src", "gen", "mold"],
                        [tmp_path / "f.bin"], libs=["-lz", "-lm", "-lpthread"]).stdout
    assert "ok" in out


def test_late_join_under_sanitizers(tmp_path):
    """Spin -> SoupBinTCP loader in random segments -> splice equals a full replay; a ring that
    no longer holds N ends behind; mutated spins only ever close; holes filled or cut short,
    restores after a loss (tests/c/join_fuzz.c)."""
    out = build_and_run(tmp_path, FUZZ / "join_fuzz.c", ["join", "spin", "feed", "snap", "hist", "book", "itch", "mold", "gen", "recovery"],
                         libs=["-lm"]).stdout
    assert out.startswith("ok ") and len(out.split()) == 6


def test_recovery_under_sanitizers(tmp_path):
    """Loss, duplicates, reordering and hostile live packets; requests answered by a server
    model, some answers cut, lying, foreign, late or twice; exact accounting at the end
    (tests/c/recovery_fuzz.c)."""
    out = build_and_run(tmp_path, FUZZ / "recovery_fuzz.c",
                        ["recovery", "feed", "mold", "itch", "book", "hist", "snap", "join", "spin", "gen"],
                        libs=["-lm", "-lpthread"]).stdout
    assert out.startswith("ok ") and "recovered=0" not in out and "malformed=0" not in out


def test_day_scale_feed_loop_under_sanitizers(tmp_path):
    """The deep loop of hc_books_feed_records (past 64 stocks) with its look-ahead hints for old
    orders in the reference table (which grows inside the buffer) and for the level an add joins:
    a day-profile stream into books sized for 1,024 orders equals, order by order, the same stream
    applied message by message; mutated day buffers keep the invariants (tests/c/book_deep_fuzz.c)."""
    out = build_and_run(tmp_path, FUZZ / "book_deep_fuzz.c", ["itch", "book", "gen", "mold"],
                        libs=["-lm"]).stdout
    assert "same books: 300 stocks" in out and "\nok " in out


def test_xsk_frame_prediction_against_a_model_of_the_kernel_pool(tmp_path):
    """xskpred.h (which UMEM frame the next RX descriptors carry, for capture.c's prefetch) driven
    by a model of the kernel's buffer pool (fill ring FIFO, free list LIFO): never wrong in copy
    mode even with a full RX ring; in zero-copy, with frames passed or dropped, wrong at most twice
    per freed frame where a fixed fill-entry-j guess is wrong on most (tests/c/xskpred_sim.c)."""
    out = build_and_run(tmp_path, FUZZ / "xskpred_sim.c", []).stdout
    assert "\nok copy " in out, out
    copy = out.split("copy: scored ")[1].split()
    assert int(copy[0]) > 100_000 and int(copy[2]) == 0, out


def test_capture_framer_under_sanitizers(tmp_path):
    """A plain capture's framer thread (files.c): a day stream in MoldUDP64 frames of 1-6 blocks
    with foreign frames, duplicates, a gap, cut blocks and a cut last unit, pcap and pcapng, many
    stages long, fed in steps of 1 byte to 16 MiB here and on a filejob, gives the books, drops
    and MoldUDP64 counters of the books' own parse of the same capture (gzip: no framer); early
    closes and a stopped job neither hang nor leak (tests/c/framer_fuzz.c, ASan/UBSan)."""
    out = build_and_run(tmp_path, FUZZ / "framer_fuzz.c", ["files", "src", "book", "itch", "mold", "gen"],
                        [tmp_path], libs=["-lz", "-lm", "-lpthread"]).stdout
    assert out.startswith("ok compared=16 ") and " drops=0" not in out, out


def test_capture_framer_under_thread_sanitizer(tmp_path):
    """The same harness under ThreadSanitizer: the framer's ring hands stages, their drops and
    the end between two threads with no data race (two step sizes, for time)."""
    import platform
    import shutil
    import subprocess
    from sanitized import CORE
    cc = shutil.which("cc") or shutil.which("gcc")
    exe = tmp_path / "framer_tsan"
    cp = subprocess.run([cc, "-std=gnu11", "-D_GNU_SOURCE", "-O1", "-g", "-Wno-tsan", "-fsanitize=thread",
                         f"-I{CORE}", str(FUZZ / "framer_fuzz.c"),
                         *[str(CORE / f"{m}.c") for m in ("files", "src", "book", "itch", "mold", "gen")],
                         "-lz", "-lm", "-lpthread", "-o", str(exe)], capture_output=True, text=True, timeout=180)
    assert cp.returncode == 0, cp.stderr
    # without address randomisation: TSan's shadow map fails where the kernel randomises more
    # bits than the runtime expects (vm.mmap_rnd_bits = 32 on recent Ubuntu kernels)
    run = subprocess.run(["setarch", platform.machine(), "-R", str(exe), str(tmp_path), "quick"],
                         capture_output=True, text=True, timeout=300,
                         env={"TSAN_OPTIONS": "halt_on_error=1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and "ThreadSanitizer" not in run.stderr, run.stdout + run.stderr[-4000:]
    assert run.stdout.startswith("ok compared=8 "), run.stdout
