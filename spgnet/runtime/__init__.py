"""The process a job runs in, not what it computes: glibc's allocator kept from returning freed
tensor memory to the kernel (:mod:`.allocator`) and the machine a timing was measured on
(:mod:`.hardware`). Nothing is imported here.
"""
