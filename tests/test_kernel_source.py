"""Kernel sources against real git repositories made in the test (no network): the shared bare
repo with a worktree per kernel, branches, shallow clones, re-fetch updating the tree, failing
URLs; tarballs extracted once; folders. (~3 s)"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from lvh_kernel import source
from lvh_kernel.source import parse_source

from lvh.api import StageError, StageInfo, UserError
from lvh.testing import make_context

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin",
                               "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}).stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git("add", name, cwd=repo)
    git("commit", "-q", "-m", f"{name}: {text}", cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


@pytest.fixture
def upstream(tmp_path) -> Path:
    """A repo with master (3 commits) and a 'feature' branch."""
    repo = tmp_path / "linux"
    repo.mkdir()
    git("init", "-q", "-b", "master", cwd=repo)
    commit(repo, "Makefile", "v1")
    commit(repo, "Kconfig", "k")
    commit(repo, "Makefile", "v2")
    git("checkout", "-q", "-b", "feature", cwd=repo)
    commit(repo, "feature.c", "f")
    git("checkout", "-q", "master", cwd=repo)
    return repo


def ctx_for(tmp_path: Path, name: str = "k"):
    st = StageInfo(id=f"kernel:{name}", kind="kernel", driver="make", target=name)
    return make_context(tmp_path / "c", real=True, stage=st, state_dir=tmp_path / "state")


@pytest.mark.parametrize("text, kind, loc, branch, depth", [
    ("git://git.kernel.org/pub/scm/linux/kernel/git/bpf/bpf-next.git#master", "git",
     "git://git.kernel.org/pub/scm/linux/kernel/git/bpf/bpf-next.git", "master", None),
    ("https://git.kernel.org/x/linux.git?depth=1#v6.1", "git", "https://git.kernel.org/x/linux.git", "v6.1", 1),
    ("file:///srv/linux.git", "git", "file:///srv/linux.git", None, None),
])
def test_parse_git_urls(text, kind, loc, branch, depth):
    s = parse_source(text)
    assert (s.kind, s.location, s.branch, s.depth) == (kind, loc, branch, depth)


def test_parse_local_paths(tmp_path, upstream):
    s = parse_source(f"{upstream}#feature")
    assert (s.kind, s.location, s.branch) == ("git", f"file://{upstream}", "feature")
    s = parse_source(f"{upstream}?depth=2")
    assert (s.kind, s.depth) == ("git", 2)
    assert parse_source(str(upstream)).kind == "dir"
    tb = tmp_path / "linux.tar.gz"
    tb.write_bytes(b"")
    assert parse_source(str(tb)).kind == "tar"


@pytest.mark.parametrize("text, match", [
    ("/no/such/dir", "does not exist"),
    ("git://host/repo?depth=zero", "invalid depth"),
    ("git://host/repo?depth=0", "invalid depth"),
    ("https://host/linux-6.1.tar.xz", "not supported"),
    ("", "empty"),
])
def test_parse_bad_sources(text, match):
    with pytest.raises(UserError, match=match) as e:
        parse_source(text)
    assert e.value.hint


def test_not_a_kernel_tree(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="not a kernel source tree"):
        parse_source(str(tmp_path / "x"))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="not a tarball"):
        parse_source(str(tmp_path / "f.txt"))


def test_worktrees_share_one_bare_repo_and_follow_branches(tmp_path, upstream):
    ctx = ctx_for(tmp_path)
    a = source.git_fetch(ctx, parse_source(f"file://{upstream}#master"), "a")
    b = source.git_fetch(ctx, parse_source(f"file://{upstream}#feature"), "b")
    bare = tmp_path / "state" / "git" / "main.git"
    assert a.path == tmp_path / "state" / "git" / "trees" / "a"
    assert (a.path / ".git").is_file() and (b.path / ".git").is_file()  # worktrees, not clones
    assert str(bare) in (a.path / ".git").read_text()
    assert (a.path / "Makefile").read_text() == "v2" and not (a.path / "feature.c").exists()
    assert (b.path / "feature.c").exists()
    assert a.revision == f"git:{git('rev-parse', 'master', cwd=upstream)}"
    remotes = git("remote", cwd=bare).split()
    assert sorted(remotes) == ["a", "b"]
    # the default branch when none is given
    c = source.git_fetch(ctx, parse_source(f"file://{upstream}"), "c")
    assert (c.path / "Makefile").read_text() == "v2"


def test_refetch_updates_the_worktree(tmp_path, upstream):
    ctx = ctx_for(tmp_path)
    spec = parse_source(f"file://{upstream}#master")
    first = source.git_fetch(ctx, spec, "a")
    new = commit(upstream, "Makefile", "v3")
    second = source.git_fetch(ctx, spec, "a")
    assert second.path == first.path and second.revision == f"git:{new}"
    assert (second.path / "Makefile").read_text() == "v3"


def test_shallow_clone_and_refetch(tmp_path, upstream):
    ctx = ctx_for(tmp_path)
    spec = parse_source(f"{upstream}?depth=1#master")
    t = source.git_fetch(ctx, spec, "s")
    assert t.path == tmp_path / "state" / "git" / "shallow" / "s"
    assert (t.path / ".git").is_dir()  # its own clone
    assert git("rev-list", "--count", "HEAD", cwd=t.path) == "1"
    assert not (tmp_path / "state" / "git" / "main.git").exists()
    new = commit(upstream, "Makefile", "v3")
    t2 = source.git_fetch(ctx, spec, "s")  # upstream never updated a shallow tree
    assert t2.revision == f"git:{new}" and (t2.path / "Makefile").read_text() == "v3"
    assert git("rev-list", "--count", "HEAD", cwd=t2.path) == "1"


def test_refetch_refuses_to_drop_local_changes(tmp_path, upstream):
    ctx = ctx_for(tmp_path)
    spec = parse_source(f"file://{upstream}#master")
    t = source.git_fetch(ctx, spec, "a")
    (t.path / "Makefile").write_text("my local patch")
    with pytest.raises(UserError, match="local changes") as e:
        source.git_fetch(ctx, spec, "a")
    assert "stash" in e.value.hint
    assert (t.path / "Makefile").read_text() == "my local patch"
    # the revision of a dirty tree differs from the clean one (so the cache key changes)
    assert source.git_tree(ctx, spec, "a").revision != f"git:{git('rev-parse', 'master', cwd=upstream)}"


@pytest.mark.parametrize("url", ["file:///nonexistent/repo.git#master", "{repo}#no-such-branch",
                                 "{repo}?depth=1#no-such-branch"])
def test_failing_git_url_is_clear_and_leaves_nothing(tmp_path, upstream, url):
    ctx = ctx_for(tmp_path)
    with pytest.raises(StageError) as e:
        source.git_fetch(ctx, parse_source(url.format(repo=upstream)), "bad")
    msg = str(e.value)
    assert msg.startswith("git ") and "failed for" in msg and "fatal" in msg
    assert "git ls-remote" in e.value.hint
    state = tmp_path / "state" / "git"
    assert not (state / "trees" / "bad").exists() and not (state / "shallow" / "bad").exists()
    assert not list(state.glob("shallow/.partial-*"))
    if (state / "main.git").exists():
        assert git("remote", cwd=state / "main.git") == ""


def test_remove_drops_tree_and_remote(tmp_path, upstream):
    ctx = ctx_for(tmp_path)
    spec = parse_source(f"file://{upstream}#master")
    t = source.git_fetch(ctx, spec, "a")
    source.git_remove(ctx, spec, "a")
    assert not t.path.exists()
    assert git("remote", cwd=tmp_path / "state" / "git" / "main.git") == ""
    # and it can be fetched again
    assert source.git_fetch(ctx, spec, "a").path.exists()


def test_tarball_extracted_once(tmp_path):
    tree = tmp_path / "src" / "linux-9.9"
    tree.mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 9\n")
    (tree / "Kconfig").write_text("")
    tb = tmp_path / "linux-9.9.tar.gz"
    with tarfile.open(tb, "w:gz") as t:
        t.add(tree, arcname="linux-9.9")
    ctx = ctx_for(tmp_path)
    first = source.prepare(ctx, parse_source(str(tb)), "k")
    assert first.path.name.startswith("tar-") and (first.path / "Makefile").read_text() == "VERSION = 9\n"
    assert first.revision.startswith("sha256:")
    (first.path / "marker").write_text("kept")
    again = source.prepare(ctx, parse_source(str(tb)), "other-kernel")
    assert again.path == first.path and (again.path / "marker").exists()  # not re-extracted
    assert not list((tmp_path / "state" / "src").glob(".partial-*"))


def test_folder_source_is_built_in_place_and_must_be_clean(tmp_path, upstream):
    ctx = ctx_for(tmp_path)
    t = source.prepare(ctx, parse_source(str(upstream)), "k")
    assert t.path == upstream and t.revision.startswith("git:")
    (upstream / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(UserError, match="not clean") as e:
        source.prepare(ctx, parse_source(str(upstream)), "k")
    assert "mrproper" in e.value.hint


def test_a_glob_source_picks_the_newest_tarball(tmp_path):
    for v in ("6.1", "6.9", "6.10"):
        (tmp_path / f"linux-source-{v}.tar.xz").write_bytes(b"")
    spec = parse_source(str(tmp_path / "linux-source-*.tar.xz"))
    assert spec.kind == "tar" and spec.location.endswith("linux-source-6.10.tar.xz")
    with pytest.raises(UserError, match="nothing matches"):
        parse_source(str(tmp_path / "linux-nope-*.tar.xz"))
