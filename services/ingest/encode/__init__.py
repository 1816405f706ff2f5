"""Flow-export encoders (FLOW_DTYPE rows -> wire datagrams) for the simulator, benchmarks and tests."""

from voxguard.ingest.encode.netflow import IpfixEncoder, NetflowV5Encoder, NetflowV9Encoder

__all__ = ["IpfixEncoder", "NetflowV5Encoder", "NetflowV9Encoder"]
