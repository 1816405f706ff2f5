"""Pure wire decoders for flow exports: bytes in, columnar flows out; no sockets, no clocks."""
