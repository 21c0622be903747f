"""Process-level plumbing shared by every job: errors and exit codes, Ray connection, CLI parsing, output layout, hardware facts."""
