"""curvlens.io"""
