"""curvlens.hooks"""
