"""The CXL bus beside the dax bus: a topology of ports, memdevs and HDM
decoders whose RAM regions become dax regions (drivers/cxl)."""
from .bus import CxlBus
from .objects import ENDPOINT, ROOT, SWITCH, Decoder, Dport, Memdev, Port, Region
from .topology import DEFAULT, DEFAULT_TEXT, GRANULE, LSA_SIZE, Topology, parse

__all__ = ["CxlBus", "DEFAULT", "DEFAULT_TEXT", "ENDPOINT", "GRANULE", "LSA_SIZE", "ROOT", "SWITCH", "Decoder", "Dport",
           "Memdev", "Port", "Region", "Topology", "parse"]
