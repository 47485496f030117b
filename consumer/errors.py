"""The worker's exception tree: what a failure means for whoever catches it.

Every exception the worker raises on purpose derives from `ErasureError`, and from exactly
one of three kinds, so a catch site asks "may this succeed later?" once instead of listing
the transient errors of every stage again (the way httpx's `TransportError` stands for
every connection problem):

    ErasureError
     ├── FatalError                no retry helps until an operator changes configuration or
     │    │                        code: stop (at start-up) or stop using what is broken
     │    ├── ConfigError              consumer.config: the configuration cannot be used
     │    │    └── KafkaConfigError    consumer.kafka.errors: librdkafka refused a property
     │    └── VendorAuthError          consumer.vendors.base: credentials refused; items wait
     ├── TransientError            may succeed later: back off and try the same thing again
     │    │                        (nothing is lost; the stages tolerate a repeat)
     │    ├── LedgerUnavailable        consumer.ledger.protocol: database unreachable or locked
     │    ├── KafkaFailure             consumer.kafka.errors: a Kafka call failed (`fatal`,
     │    │                            `retriable` and `message_refused` say more)
     │    ├── SchemaUnavailable        consumer.kafka.codec: the schema registry did not answer
     │    ├── DeadLetterFailed         consumer.pipeline.dead_letters: DLQ did not confirm
     │    ├── PublishFailed            consumer.pipeline.outbox: status events not confirmed
     │    └── RetryableVendorError     consumer.vendors.base: 5xx, timeout, reset (may
     │         │                       carry the vendor's Retry-After)
     │         └── VendorRateLimited   consumer.vendors.base: 429, which costs no attempt
     └── RejectedError             this input can never succeed, whenever it is retried:
          │                        set it aside (dead-letter it, fail the item) and go on
          ├── UndecodableMessage       consumer.kafka.framing: not a framed Avro request
          ├── InvalidRequest           consumer.kafka.request_rules: breaks a rule of §3
          ├── LedgerRejected           consumer.ledger.protocol: the database refuses the data
          └── PermanentVendorError     consumer.vendors.base: the vendor rejected the request

Families that group errors by *where* they come from keep their own bases beside this tree
(`CodecError`, `VendorError`): `except VendorError` still catches every vendor failure,
and `except TransientError` every failure worth a backoff, whatever stage raised it.

Anything else that escapes a stage is a bug or an answer nobody foresaw: the loop runner
(`consumer.runtime.loops`) logs it with its traceback and backs off, so no loop dies
silently, and dispatch and the poller count it as a failed attempt.
"""

from __future__ import annotations


class ErasureError(Exception):
    """Raised on purpose by the worker; `str(error)` never holds identity values or secrets."""


class FatalError(ErasureError):
    """Retrying cannot help until an operator changes configuration or code."""


class TransientError(ErasureError):
    """Trying the same thing again later may succeed; nothing is lost by backing off."""


class RejectedError(ErasureError):
    """This input itself is refused: the same input fails the same way every time."""
