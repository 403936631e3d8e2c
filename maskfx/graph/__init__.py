"""torch.fx helpers and layer surgery that several techniques share."""
