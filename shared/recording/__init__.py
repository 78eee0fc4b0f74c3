"""Usage recording: what each interception did (the reference's ``Recorder``), stored in a database."""
