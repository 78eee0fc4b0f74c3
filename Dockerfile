FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8080
CMD ["aibridge", "api", "--host", "0.0.0.0"]
