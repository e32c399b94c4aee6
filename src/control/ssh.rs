//! SSH channel (ssh2). Filled in by the SSH work.
