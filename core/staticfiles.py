"""WhiteNoise's static file middleware, answering with the file's bytes instead of a stream.

WhiteNoise (6.x, WSGI-minded) answers with a `FileResponse`, a stream over a synchronous file
iterator. Under ASGI Django cannot iterate that on the event loop: it warns, then hops to the
request's thread to read it all into a list before sending anything but the headers. A 304
(an empty iterator) paid the same hop after its headers had gone out, so a browser had the
whole 304 and sent its next request while Django was still finishing it (see core/asgi.py).

This middleware runs in the request's thread anyway (it is sync-only), so it reads the file
there and answers a plain `HttpResponse`: no iterator, no extra hop, the body sent as soon as
the headers. The files it serves are the site's own (the largest, Django admin's, is a few
hundred KB), read from the page cache.
"""

from django.http import HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    @staticmethod
    def serve(static_file, request):
        found = static_file.get_response(request.method, request.META)
        content = b""
        if found.file is not None:
            with found.file:
                content = found.file.read()
        response = HttpResponse(content, status=int(found.status))
        del response["Content-Type"]  # WhiteNoise's headers say what the file is
        for name, value in found.headers:
            response[name] = value
        return response
