"""Stage 4, partition: which ops run in engines and which in PyTorch, and the segments between them."""

from flexrt.partition.partitioner import PartitionPlan, PartitionReport, SegmentPlan, classify, op_name, partition

__all__ = ["PartitionPlan", "PartitionReport", "SegmentPlan", "classify", "op_name", "partition"]
