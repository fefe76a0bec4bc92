"""File transfer: CCSDS File Delivery Protocol (727.0) entities built on cfdp-py, shared by the
agent and the ground (flight owns the protocol)."""
