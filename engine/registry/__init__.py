"""joblog and a schema registry: the Confluent wire format on every topic, when configured.

With ``JOBLOG_SCHEMA_REGISTRY_URL`` set, every producer (:func:`engine.kafka.producer`)
registers joblog's schemas under the subjects of the topics it writes and frames each record
with the registry's schema id; every consumer (:func:`engine.kafka.consumer`) decodes records
of both framings, fetching the writer schema of an unknown id from the registry. Without it
nothing changes: records are written in Avro single-object encoding (DESIGN.md §7).

* :mod:`engine.registry.client`: the HTTP calls of the Confluent API joblog makes.
* :mod:`engine.registry.subjects`: subjects, registration with compatibility, framing.
* :mod:`engine.registry.compatibility`: Avro reader/writer resolution, for the local registry.
* :mod:`engine.registry.local`: a registry in a thread that speaks that API subset, for tests
  and machines without one (``python -m engine.registry`` runs it).
"""

from engine.registry.client import RegistryClient
from engine.registry.subjects import Registry, connect, subject_for

__all__ = ["Registry", "RegistryClient", "connect", "subject_for"]
