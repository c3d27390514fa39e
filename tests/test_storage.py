"""The served root: name rules, the dir-fd walk, atomic commits, listings."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

import blake3

from muxserver.digests import BLAKE3, SHA256, Digest
from muxserver.storage import Root, StorageError, split_name

pytestmark = pytest.mark.timeout(30)

BAD_NAMES = [
    "../x", "a/../../x", "/etc/passwd", "..\\x", "a\\b", "C:x", "a:b", "c:/windows", ".", "..", "",
    "a//b", "a/", "./a", "a/./b", "x" * 256, "a/" + "y" * 256, "a\0b", "a\nb", "tab\there",
    "\x7f", "\x85next-line", "CON", "con.txt", "dir/NUL", "aux.tar.gz", "COM1", "lpt9.log",
    ".muxserver-tmp-1234", "dir/.muxserver-anything",
    "\uff0e\uff0e/x",  # fullwidth dots: NFKC turns them into "../x"
    "a\uff0fb",  # fullwidth solidus: NFKC makes it a separator
    "\u2024\u2024/etc",  # one dot leaders
    "a/\udcff",  # a lone surrogate: not encodable as UTF-8
    "z" * 4097,
]

GOOD_NAMES = ["a.txt", "dir/sub/file.bin", "ünïcödé/ファイル.txt", ".hidden", "a b c",
              "x" * 255, "con-artist.txt", "ab:c", "12:30.log", "...", "..a", "a..", "dir.d/x"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(name):
    with pytest.raises(StorageError) as info:
        split_name(name)
    assert info.value.code == "bad_name"


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_accepted(name):
    assert split_name(name) == name.split("/")


def upload(root: Root, name: str, data: bytes, **kw):
    up = root.begin_upload(name, len(data), Digest(SHA256, hashlib.sha256(data).hexdigest()),
                           overwrite=kw.pop("overwrite", False),
                           allow_overwrite=kw.pop("allow_overwrite", False), **kw)
    up.write(memoryview(data))
    return up


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "served"
    path.mkdir()
    root = Root(path)
    try:
        yield root, path
    finally:
        root.close()


def test_commit_publishes_the_file_and_leaves_no_temporary(served):
    root, path = served
    up = upload(root, "d1/d2/f.txt", b"content")
    assert not (path / "d1/d2/f.txt").exists()  # nothing under the final name before commit
    assert len(list((path / "d1/d2").iterdir())) == 1  # just the temporary file
    up.commit()
    assert (path / "d1/d2/f.txt").read_bytes() == b"content"
    assert sorted(os.listdir(path / "d1/d2")) == ["f.txt"]


def test_checksum_mismatch_stores_nothing(served):
    root, path = served
    up = root.begin_upload("f", 3, Digest(SHA256, "0" * 64), overwrite=False,
                           allow_overwrite=False)
    up.write(memoryview(b"abc"))
    with pytest.raises(StorageError) as info:
        up.commit()
    assert info.value.code == "checksum_mismatch"
    assert os.listdir(path) == []


def test_abort_removes_the_temporary_and_the_directories_it_made(served):
    root, path = served
    (path / "kept").mkdir()
    up = upload(root, "kept/new1/new2/f", b"partial")
    up.abort()
    assert os.listdir(path) == ["kept"] and os.listdir(path / "kept") == []


def test_existing_names_need_overwrite_and_permission(served):
    root, path = served
    upload(root, "f", b"old").commit()
    with pytest.raises(StorageError, match="already exists") as info:
        upload(root, "f", b"new")
    assert info.value.code == "exists"
    with pytest.raises(StorageError) as info:
        upload(root, "f", b"new", overwrite=True)
    assert info.value.code == "overwrite_refused"
    upload(root, "f", b"new", overwrite=True, allow_overwrite=True).commit()
    assert (path / "f").read_bytes() == b"new"


@pytest.mark.parametrize("access_answers", [True, False], ids=["faccessat2", "lstat"])
def test_the_free_name_check_sees_every_kind_of_entry(served, access_answers):
    """An upload's target is checked by faccessat2, or by lstat where a sandbox refuses
    faccessat2: either way, a file, a directory, a FIFO and a link to nowhere are taken,
    and an upload refuses the link before its body comes."""
    root, path = served
    root._access_answers = access_answers
    (path / "file").write_bytes(b"x")
    (path / "dir").mkdir()
    os.mkfifo(path / "fifo")
    os.symlink(path / "nowhere", path / "dangling")
    for taken in ("file", "dir", "fifo", "dangling"):
        assert not root._free(root.dir_fd, taken), taken
    assert root._free(root.dir_fd, "new")
    with pytest.raises(StorageError) as info:
        upload(root, "dangling", b"x")
    assert info.value.code == "forbidden"
    assert not (path / "nowhere").exists()


def test_a_root_that_answers_faccessat2_uses_it(served):
    root, _ = served
    assert root._access_answers  # (this machine's kernel and sandbox answer it)


def test_a_name_created_during_an_upload_is_not_clobbered(served):
    root, path = served
    up = upload(root, "race", b"mine")
    (path / "race").write_bytes(b"theirs")
    with pytest.raises(StorageError) as info:
        up.commit()
    assert info.value.code == "exists"
    assert (path / "race").read_bytes() == b"theirs"
    assert os.listdir(path) == ["race"]


def test_readers_keep_the_old_file_while_it_is_replaced(served):
    root, path = served
    upload(root, "f", b"old version").commit()
    opened = root.open_file("f")
    upload(root, "f", b"new", overwrite=True, allow_overwrite=True).commit()
    assert os.pread(opened.fd, 100, 0) == b"old version"
    os.close(opened.fd)


def test_symlinks_are_never_followed(served, tmp_path):
    root, path = served
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    os.symlink(outside, path / "link_dir")
    os.symlink(outside / "secret", path / "link_file")
    for name in ("link_file", "link_dir/secret"):
        with pytest.raises(StorageError) as info:
            root.open_file(name)
        assert info.value.code == "forbidden", name
    with pytest.raises(StorageError) as info:
        upload(root, "link_dir/new", b"x")
    assert info.value.code == "forbidden"
    with pytest.raises(StorageError):
        list(root.iter_entries("link_dir"))
    assert sorted(os.listdir(outside)) == ["secret"]


def test_a_directory_swapped_for_a_symlink_mid_upload_cannot_redirect_the_commit(served, tmp_path):
    root, path = served
    outside = tmp_path / "outside2"
    outside.mkdir()
    (path / "d").mkdir()
    up = upload(root, "d/f", b"data")
    os.rename(path / "d", path / "d-moved")
    os.symlink(outside, path / "d")
    up.commit()  # the upload holds the directory itself, not its name
    assert os.listdir(outside) == []
    assert (path / "d-moved" / "f").read_bytes() == b"data"


def test_fifo_is_refused_without_blocking(served):
    root, path = served
    os.mkfifo(path / "fifo")
    done = threading.Event()

    def attempt():
        with pytest.raises(StorageError) as info:
            root.open_file("fifo")
        assert info.value.code == "not_a_file"
        done.set()

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    assert done.wait(5), "opening a FIFO blocked"
    thread.join()


def test_unix_socket_and_device_are_not_files(served):
    root, path = served
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path / "sock"))
        with pytest.raises(StorageError) as info:
            root.open_file("sock")
        assert info.value.code == "not_a_file"
    finally:
        sock.close()
    if os.path.exists("/dev/null"):
        os.symlink("/dev/null", path / "null")
        with pytest.raises(StorageError):
            root.open_file("null")


def test_directories_and_missing_names_get_precise_errors(served):
    root, path = served
    (path / "dir").mkdir()
    (path / "file").write_text("x")
    cases = [("dir", "is_directory"), ("missing", "not_found"), ("file/x", "not_a_directory"),
             ("missing/x", "not_found")]
    for name, code in cases:
        with pytest.raises(StorageError) as info:
            root.open_file(name)
        assert info.value.code == code, name
    with pytest.raises(StorageError) as info:
        upload(root, "file/x", b"1")
    assert info.value.code == "not_a_directory"
    with pytest.raises(StorageError) as info:
        upload(root, "dir", b"1")
    assert info.value.code == "is_directory"


def test_listing_hides_temporary_files_and_walks_recursively(served):
    root, path = served
    upload(root, "a/b/c.txt", b"123").commit()
    pending = upload(root, "a/pending.txt", b"zz")  # its temporary file sits in a/
    entries = {e["name"]: e for e in root.iter_entries("", recursive=True)
               if isinstance(e, dict)}  # (None: a step's work with nothing to show)
    assert set(entries) == {"a", "a/b", "a/b/c.txt"}
    assert entries["a/b/c.txt"]["size"] == 3 and entries["a"]["type"] == "dir"
    assert {e["name"] for e in root.iter_entries("a") if isinstance(e, dict)} == {"a/b"}
    pending.abort()


def test_stat_reports_the_known_hash(served):
    root, path = served
    digest = upload(root, "h.txt", b"hash me").commit()
    info = root.stat("h.txt")
    assert info["sha256"] == digest.hex == hashlib.sha256(b"hash me").hexdigest()
    assert "blake3" not in info  # (never computed: a stat does not hash)
    assert root.open_file("h.txt").digest == digest
    assert root.open_file("h.txt", BLAKE3).digest is None


def test_an_upload_declared_in_blake3_is_checked_and_remembered_in_blake3(served):
    root, path = served
    data = b"hash me fast"
    good = Digest(BLAKE3, blake3.blake3(data).hexdigest())
    up = root.begin_upload("b.txt", len(data), good, overwrite=False, allow_overwrite=False)
    up.write(memoryview(data))
    assert up.commit() == good
    assert root.stat("b.txt")["blake3"] == good.hex
    bad = root.begin_upload("c.txt", len(data), Digest(BLAKE3, "0" * 64), overwrite=False,
                            allow_overwrite=False)
    bad.write(memoryview(data))
    with pytest.raises(StorageError) as refused:
        bad.commit()
    assert refused.value.code == "checksum_mismatch" and "BLAKE3" in refused.value.message
    assert not (path / "c.txt").exists()


def test_hash_cache_is_invalidated_when_the_file_changes(served):
    root, path = served
    upload(root, "h.txt", b"first").commit()
    with open(path / "h.txt", "ab") as f:
        f.write(b" and more")
    opened = root.open_file("h.txt")
    assert opened.digest is None
    os.close(opened.fd)


def test_stale_temporary_files_are_swept_at_start(served, tmp_path):
    root, path = served
    (path / "sub").mkdir()
    (path / "sub" / ".muxserver-tmp-deadbeef").write_bytes(b"half an upload")
    (path / "keep.txt").write_text("k")
    assert root.sweep_temporary_files() == (1, 0)
    assert sorted(p.name for p in path.rglob("*")) == ["keep.txt", "sub"]
    second = Root(path)  # another server on the same root must not sweep
    try:
        assert second.sweep_temporary_files() == (0, 0)
    finally:
        second.close()


def test_a_claim_its_writer_abandoned_is_taken_back_after_its_lease(tmp_path):
    """Two servers on one root (another machine's died writing a partial file): the
    claim is the other's while it could still be written, and no one's after its
    lease, when this server goes on from what the file holds."""
    from muxserver.storage import native_identity, partial_key

    data = os.urandom(300_000)
    digest = Digest(SHA256, hashlib.sha256(data).hexdigest())
    key = partial_key("f.bin", b"", native_identity(digest, None), len(data))
    dead = Root(tmp_path)
    upload = dead.begin_upload("f.bin", len(data), digest, overwrite=False,
                               allow_overwrite=False, key=key)
    upload.write(memoryview(data[:100_000]))
    assert upload.abort(interrupted=True) == 100_000  # (kept as a partial file)
    upload = dead.begin_upload("f.bin", len(data) - 100_000, digest, overwrite=False,
                               allow_overwrite=False, key=key, offset=100_000)
    upload.write(memoryview(data[100_000:150_000]))  # ...and that server dies here
    other = Root(tmp_path, claim_lease=3600.0)
    try:
        with pytest.raises(StorageError) as busy:
            other.held("f.bin", key, len(data))
        assert busy.value.code == "server_busy"  # (its writer may still be at work)
        other.claim_lease = 0.0  # (the lease is over)
        assert other.held("f.bin", key, len(data)) == 150_000
        resumed = other.begin_upload("f.bin", len(data) - 150_000, digest, overwrite=False,
                                     allow_overwrite=False, key=key, offset=150_000)
        resumed.write(memoryview(data[150_000:]))
        hashed: list[str | None] = []
        done = threading.Event()
        assert resumed.finish_hash(lambda hexdigest: (hashed.append(hexdigest), done.set()))
        assert done.wait(30)
        resumed.commit(hashed[0])
        assert (tmp_path / "f.bin").read_bytes() == data
    finally:
        other.close()
        if upload.hash_job is not None:  # (what the dead server held, let go)
            upload.hash_job.cancel()
        os.close(upload.fd)
        os.close(upload.parent)
        dead.close()
