"""VoxGuard."""
