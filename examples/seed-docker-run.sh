#!/bin/sh
# The seed deployment, as operators type it on each Docker host.
# The registrar turns each container into a Consul service; the renderer
# turns the tagged ones into nginx config. IMAGE must expose the ports
# (or pass --expose PORT); -P publishes them on random host ports.
IMAGE=${IMAGE:-nginx-sync-test/busybox:1}
PREFIX=${PREFIX:-}   # container name prefix (the tests use one)

# Internal: in Consul (httpbackend.service.dc1.consul), never exposed by nginx.
docker run -d --name "${PREFIX}httpbackend" -l SERVICE_NAME=httpbackend --expose 80 -P "$IMAGE" \
    sh -c "echo httpbackend > /www/index.html; exec httpd -f -p 80 -h /www"

# Exposed through nginx as http://httpfront.<domain>/, balanced over every instance.
for n in 1 2 3; do
    docker run -d --name "${PREFIX}httpfront-$n" -l SERVICE_NAME=httpfront -l SERVICE_TAGS=http --expose 80 -P "$IMAGE" \
        sh -c "echo httpfront-$n > /www/index.html; exec httpd -f -p 80 -h /www"
done

# Exposed through nginx's stream block on port 9999 (the suffix of the name).
docker run -d --name "${PREFIX}tcpfront" -l SERVICE_NAME=tcpfront-9999 -l SERVICE_TAGS=tcp --expose 9999 -P "$IMAGE" \
    nc -ll -p 9999 -e cat

# A canary: one instance of httpfront carrying a weight for examples/templates/canary.conf.j2.
docker run -d --name "${PREFIX}httpfront-canary" -l SERVICE_NAME=httpfront -l SERVICE_TAGS=http,canary \
    -l SERVICE_WEIGHT=1 --expose 80 -P "$IMAGE" \
    sh -c "echo httpfront-canary > /www/index.html; exec httpd -f -p 80 -h /www"

# TLS passthrough for examples/templates/tls-passthrough.conf.j2: TLS ends in the container.
#   docker run -d -l SERVICE_NAME=secure -l SERVICE_TAGS=tls -P my-tls-image
