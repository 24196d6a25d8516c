"""gRPC: the agents' WorkerService (HWP), the clients' JobExecutionService, and the one
module where protobuf messages and domain objects meet (wire.py)."""
