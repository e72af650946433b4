"""curvlens.recommend"""
