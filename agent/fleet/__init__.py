"""The consumer side: many hosts' records from Kafka, merged (`connscope fleet`)."""
