"""A stand-in for a Nova-era service's RPC layer (Folsom-Havana), written
from the calling convention alone, to drive the backend as such code does."""
