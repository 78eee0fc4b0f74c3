"""The HTTP API: validates requests, enqueues jobs and relays each job's stream to its client."""
