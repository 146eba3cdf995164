"""The imperative shell: Faust app, topics, the profile table, the batch agent, ticks, metrics."""
