# Sourced by the scripts that install Debian packages for the tests (chromium, SLURM): one apt at a
# time. apt's own lock makes a second apt-get fail at once, and the test workers run side by side.
APT_LOCK=/var/lock/llava-more-apt.lock

take_apt_lock() {  # holds the lock on fd 9 until the calling script exits
  exec 9>"$APT_LOCK"
  flock -w 900 9 || { echo "$(basename "$0"): another apt-get held $APT_LOCK for 15 min" >&2; exit 1; }
}

release_apt_lock() {  # before starting daemons, which would otherwise inherit fd 9 and the lock
  exec 9>&-
}
