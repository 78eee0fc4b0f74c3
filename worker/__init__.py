"""The arq worker: upstream calls, the tool loop and the writes to each job's Redis Stream."""
