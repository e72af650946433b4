"""curvlens.report"""
