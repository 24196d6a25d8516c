"""Pipeline runs in the server: the engine that advances them and the use cases on them."""

from hodei.server.core.pipelines.engine import PipelineEngine
from hodei.server.core.pipelines.service import Pipelines

__all__ = ["PipelineEngine", "Pipelines"]
