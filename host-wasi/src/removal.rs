//! `walvault.remove_later` and `walvault.removals_finish`: the guest's archived sources are
//! removed on a host thread while it archives the next files, as the native archiver's
//! removal thread does (the guest has no threads).
//!
//! Only files beneath a directory the guest may write are removed, through a handle on that
//! directory that no `..` or symlink can leave (cap-primitives resolves beneath it), so the
//! import grants nothing WASI's own `path_unlink_file` does not.

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use walvault::queue_dir::RemovalThread;

use crate::sandbox::Dir;

/// The writable preopens and the removal thread, started on the first request.
pub struct Removals {
    /// The path the guest knows each directory by, and a handle on it.
    roots: Arc<Vec<(PathBuf, File)>>,
    worker: Option<RemovalThread<(usize, PathBuf)>>,
}

impl Removals {
    /// For the writable ones of `dirs`.
    pub fn new(dirs: &[Dir]) -> anyhow::Result<Removals> {
        let mut roots = Vec::new();
        for dir in dirs.iter().filter(|d| d.writable) {
            let handle = cap_primitives::fs::open_ambient_dir(
                &dir.path,
                cap_primitives::ambient_authority(),
            )
            .with_context(|| format!("opening {} for the sandbox", dir.path.display()))?;
            roots.push((dir.path.clone(), handle));
        }
        Ok(Removals {
            roots: Arc::new(roots),
            worker: None,
        })
    }

    /// Hands `path` to the removal thread; false when refused (not strictly beneath a
    /// writable directory, or with a `..` component).
    pub fn queue(&mut self, path: &Path) -> bool {
        let Some(job) = self.locate(path) else {
            return false;
        };
        let roots = &self.roots;
        let worker = self.worker.get_or_insert_with(|| {
            let roots = Arc::clone(roots);
            RemovalThread::spawn(move |(root, rel): (usize, PathBuf)| {
                let (name, dir) = &roots[root];
                cap_primitives::fs::remove_file(dir, &rel)
                    .map_err(|e| format!("{}: {e}", name.join(&rel).display()))
            })
            .expect("failed to spawn the removal thread")
        });
        worker.send(job).is_ok()
    }

    /// Waits for every removal handed over; returns `path: error` for each that failed.
    pub fn finish(&mut self) -> Vec<String> {
        self.worker
            .take()
            .map(RemovalThread::finish)
            .unwrap_or_default()
    }

    fn locate(&self, path: &Path) -> Option<(usize, PathBuf)> {
        // Component-wise: an inner `.` is no component at all, a relative path matches no
        // (absolute) root.
        self.roots.iter().enumerate().find_map(|(i, (root, _))| {
            let rel = path.strip_prefix(root).ok()?;
            let plain = rel.components().next().is_some()
                && rel.components().all(|c| matches!(c, Component::Normal(_)));
            plain.then(|| (i, rel.to_owned()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_beneath_a_writable_directory_are_taken() {
        let base = tempfile::tempdir().expect("tempdir");
        let (rw, ro) = (base.path().join("rw"), base.path().join("ro"));
        for dir in [&rw, &ro] {
            std::fs::create_dir(dir).expect("dir");
        }
        let mut removals =
            Removals::new(&[Dir::read_write(&rw), Dir::read_only(&ro)]).expect("removals");
        for refused in [
            rw.clone(),
            ro.join("f"),
            rw.join("../ro/f"),
            rw.join("a/../f"),
            PathBuf::from("/etc/passwd"),
            PathBuf::from("rw/f"),
        ] {
            assert!(!removals.queue(&refused), "{} refused", refused.display());
        }
        std::fs::write(rw.join("f"), b"x").expect("f");
        std::fs::write(ro.join("f"), b"x").expect("f");
        assert!(removals.queue(&rw.join("f")));
        assert!(removals.queue(&rw.join("missing")));
        let failures = removals.finish();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with(&format!("{}: ", rw.join("missing").display())));
        assert!(!rw.join("f").exists());
        assert!(ro.join("f").exists());
        assert!(removals.finish().is_empty(), "nothing left to wait for");
    }

    #[test]
    fn a_symlinked_directory_does_not_lead_out() {
        let base = tempfile::tempdir().expect("tempdir");
        let (rw, outside) = (base.path().join("rw"), base.path().join("outside"));
        for dir in [&rw, &outside] {
            std::fs::create_dir(dir).expect("dir");
        }
        std::fs::write(outside.join("secret"), b"x").expect("secret");
        std::os::unix::fs::symlink(&outside, rw.join("link")).expect("symlink");
        let mut removals = Removals::new(&[Dir::read_write(&rw)]).expect("removals");
        assert!(
            removals.queue(&rw.join("link/secret")),
            "taken, then refused beneath"
        );
        assert_eq!(removals.finish().len(), 1);
        assert!(outside.join("secret").exists());
    }
}
