"""One call object per script: the only place that knows its KEYS, ARGV and reply."""
