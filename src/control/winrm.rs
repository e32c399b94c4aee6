//! WinRM channel (WS-Management over ureq). Filled in by the WinRM work.
