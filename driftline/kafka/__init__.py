"""The Kafka layer below streams/ and alerts/: topics, header contracts, shared consumer pieces."""
