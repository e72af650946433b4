"""curvlens.data"""
