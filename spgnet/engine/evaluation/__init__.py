"""Scoring trained networks (Sec. 4.3, Tables 2 and 12): ``spgnet evaluate`` (:mod:`.evaluate`),
test-time inference with scales, flip and GAP / AP / TILED (:mod:`.inference`), the mIoU exactly as
cityscapesscripts computes it (:mod:`.metrics`), ``spgnet score`` of any prediction folder
(:mod:`.score`), the confusion matrix (:mod:`.confusion`) and the report's reference scores,
``spgnet baseline`` (:mod:`.reference`). Nothing is imported here.
"""
