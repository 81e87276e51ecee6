"""What people read: the HTML report, overlays, prediction tables, sample grids, visdom, the README section."""
