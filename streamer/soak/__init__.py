"""`streamer soak`: the real daemon for a long run with a fault injected every N seconds, measured.

runner.py starts everything and keeps the schedule; daemon.py writes the daemon's config and runs it
(and the network sender) as child processes; faults.py has one class per fault; traffic.py sends the
prompt changes, approvals and votes a live channel makes; ledger.py checks that the store keeps them;
probes.py samples output gaps, RSS and threads; recording.py decodes the recording; report.py writes
the JSON and the markdown report. See docs/reliability.md.
"""
