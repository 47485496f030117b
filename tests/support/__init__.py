"""What tests share, one copy each: `waiting.wait_until` (every wait), `clock.ManualClock`
(every faked time), `kafka` (topics, raw produce and read), `pg` (the private PostgreSQL
server), `settings` (vendor settings for planning), `pipeline` (ingest and outbox
scaffolding), `vendor_rig.VendorRig` (a vendor's dispatch and poll loops), and for a worker
run as a process: `worker` (its setup and the end-to-end stack), `topics` (its topics read
from outside), `contract` (contract §3 and §7 as checks) and `http` (its probes and
/metrics).
"""
